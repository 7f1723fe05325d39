//! The private PKI, made with rcgen: a root CA, node (server) certificates
//! and client certificates, all ECDSA P-256.
//!
//! - [`CertificateAuthority::generate`] makes a new root CA (10 years).
//! - [`CertificateAuthority::from_pem`] reloads an existing one, so that
//!   `memgate certs` can add node certificates that still verify under the CA
//!   certificate already deployed to every sidecar.
//! - [`CertificateAuthority::issue_node`] / [`issue_client`] issue leaves
//!   (825 days); [`CertificateAuthority::issue`] takes a full [`CertSpec`]
//!   (custom validity, e.g. already expired for tests).
//! - [`write_pem_files`] / [`CertificateAuthority::write_files`] write PEM
//!   files with private keys 0600 and certificates 0644, never overwriting
//!   unless asked to.
//!
//! [`issue_client`]: CertificateAuthority::issue_client

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};

/// Validity of a new root CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(3_650 * 86_400);
/// Validity of a new node or client certificate (the CA/Browser maximum
/// that Apple clients still accept).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(825 * 86_400);
/// Certificates start being valid this long before "now", to tolerate
/// clock skew between the machine that issues and the ones that verify.
const BACKDATE: Duration = Duration::from_secs(3_600);

/// File names [`CertificateAuthority::write_files`] uses.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File names [`CertificateAuthority::write_files`] uses.
pub const CA_KEY_FILE: &str = "ca.key";

/// What went wrong making, loading or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused to make a key or certificate.
    #[error("could not {what}: {source}")]
    Generate {
        /// What we were doing, e.g. "sign the certificate for node-1".
        what: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// A subject alternative name is neither an IP address nor an ASCII DNS
    /// name.
    #[error("invalid subject alternative name {san:?}: not an IP address or an ASCII DNS name")]
    InvalidSan {
        /// The name as given.
        san: String,
    },
    /// The CA certificate or key PEM could not be parsed.
    #[error("could not load the CA {what}: {source}")]
    LoadCa {
        /// "certificate" or "private key".
        what: &'static str,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// The CA private key does not belong to the CA certificate.
    #[error("the CA private key does not match the CA certificate (its public key is not in the certificate)")]
    CaKeyMismatch,
    /// A file exists and overwriting was not requested.
    #[error("{path} already exists; refusing to overwrite it")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// "read" / "write" / "create directory".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    /// The certificate (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// The PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server (a node): EKU serverAuth.
    Server,
    /// A TLS client (a sidecar doing mutual TLS): EKU clientAuth.
    Client,
    /// Both.
    ServerAndClient,
}

/// Everything about a leaf certificate to issue.
#[derive(Debug, Clone)]
pub struct CertSpec<'a> {
    /// The subject common name.
    pub common_name: &'a str,
    /// Subject alternative names: each one that parses as an IP address
    /// (`10.0.0.1`, `::1`, `[::1]`) becomes an IP SAN, any other a DNS SAN.
    pub sans: &'a [&'a str],
    /// Server, client or both.
    pub usage: Usage,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl<'a> CertSpec<'a> {
    /// A spec valid from an hour ago for [`LEAF_VALIDITY`].
    pub fn new(common_name: &'a str, sans: &'a [&'a str], usage: Usage) -> Self {
        let now = SystemTime::now();
        CertSpec {
            common_name,
            sans,
            usage,
            not_before: now - BACKDATE,
            not_after: now + LEAF_VALIDITY,
        }
    }
}

/// A root CA that can issue node and client certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// Short name for [`CertificateAuthority`].
pub type Ca = CertificateAuthority;

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Issuer's Debug already elides the key.
        f.debug_struct("CertificateAuthority")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn gen(what: impl FnOnce() -> String) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Generate {
        what: what(),
        source,
    }
}

fn new_key(purpose: &str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(gen(|| format!("generate a P-256 key for {purpose}")))
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "memgate");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Parses one SAN: an IP address (brackets allowed) or an ASCII DNS name.
fn parse_san(san: &str) -> Result<SanType, PkiError> {
    let bare = san
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(san);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let invalid = || PkiError::InvalidSan {
        san: san.to_owned(),
    };
    if san.is_empty() || san.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    san.try_into().map(SanType::DnsName).map_err(|_| invalid())
}

impl CertificateAuthority {
    /// Makes a new root CA: P-256, valid for [`CA_VALIDITY`], basic
    /// constraints CA (no path length limit), key usages keyCertSign and
    /// cRLSign.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let now = SystemTime::now();
        Self::generate_with_validity(common_name, now - BACKDATE, now + CA_VALIDITY)
    }

    /// [`generate`](Self::generate) with explicit validity (tests use an
    /// expired CA).
    pub fn generate_with_validity(
        common_name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Self, PkiError> {
        let key = new_key("the CA")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.self_signed(&key).map_err(gen(|| {
            format!("self-sign the CA certificate {common_name:?}")
        }))?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Reloads a CA from its certificate and PKCS#8 private key, both PEM.
    /// Certificates it issues verify under the original CA certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|source| PkiError::LoadCa {
            what: "private key",
            source,
        })?;
        // rcgen's Issuer does not check that the key belongs to the
        // certificate; a mismatch would only surface as handshake failures
        // much later. The DER of a certificate contains its raw public key
        // (the SPKI bit string), so look for it there.
        let der = pem_der(cert_pem).ok_or(PkiError::LoadCa {
            what: "certificate",
            source: rcgen::Error::CouldNotParseCertificate,
        })?;
        let public = key.public_key_raw();
        if !der.windows(public.len()).any(|w| w == public) {
            return Err(PkiError::CaKeyMismatch);
        }
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|source| PkiError::LoadCa {
                what: "certificate",
                source,
            })?;
        Ok(CertificateAuthority {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// Loads `ca.crt` and `ca.key` from `dir` if both exist, or else makes a
    /// new CA and writes them there. Never overwrites: if only one of the
    /// two files exists, that is an error. Returns the CA and whether it was
    /// created.
    pub fn load_or_create(dir: &Path, common_name: &str) -> Result<(Self, bool), PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let read = |p: &Path| {
                    fs::read_to_string(p).map_err(|source| PkiError::Io {
                        action: "read",
                        path: p.to_owned(),
                        source,
                    })
                };
                let ca = Self::from_pem(&read(&cert_path)?, &read(&key_path)?)?;
                Ok((ca, false))
            }
            (false, false) => {
                let ca = Self::generate(common_name)?;
                ca.write_files(dir, false)?;
                Ok((ca, true))
            }
            (true, false) => Err(PkiError::Exists { path: cert_path }),
            (false, true) => Err(PkiError::Exists { path: key_path }),
        }
    }

    /// The CA certificate, PEM: what sidecars trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM. Keep it off the nodes.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a node (server) certificate with EKU serverAuth, valid for
    /// [`LEAF_VALIDITY`]. `name` is the subject CN; the SANs are `sans`, or
    /// `[name]` when `sans` is empty (verifiers look only at SANs).
    pub fn issue_node(&self, name: &str, sans: &[&str]) -> Result<Issued, PkiError> {
        let own = [name];
        let sans = if sans.is_empty() { &own[..] } else { sans };
        self.issue(&CertSpec::new(name, sans, Usage::Server))
    }

    /// Issues a client certificate (EKU clientAuth) with subject CN `name`,
    /// valid for [`LEAF_VALIDITY`], for mutual TLS.
    pub fn issue_client(&self, name: &str) -> Result<Issued, PkiError> {
        self.issue(&CertSpec::new(name, &[], Usage::Client))
    }

    /// Issues a leaf certificate exactly as `spec` says, with a new P-256 key.
    pub fn issue(&self, spec: &CertSpec<'_>) -> Result<Issued, PkiError> {
        let key = new_key(spec.common_name)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(spec.common_name);
        params.subject_alt_names = spec
            .sans
            .iter()
            .map(|s| parse_san(s))
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match spec.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = spec.not_before.into();
        params.not_after = spec.not_after.into();
        let cert = params.signed_by(&key, &self.issuer).map_err(gen(|| {
            format!("sign the certificate for {:?}", spec.common_name)
        }))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.crt` (0644) and `ca.key` (0600) into `dir`, creating it.
    /// Refuses to replace an existing CA unless `force`: replacing it would
    /// orphan every certificate it issued.
    pub fn write_files(&self, dir: &Path, force: bool) -> Result<(PathBuf, PathBuf), PkiError> {
        create_dir(dir)?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if !force {
            for p in [&cert_path, &key_path] {
                if p.exists() {
                    return Err(PkiError::Exists { path: p.clone() });
                }
            }
        }
        write_file(&key_path, self.key_pem().as_bytes(), 0o600, force)?;
        write_file(&cert_path, self.cert_pem.as_bytes(), 0o644, force)?;
        Ok((cert_path, key_path))
    }
}

/// The DER bytes of the first PEM section, if any.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c| c.to_vec())
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        action: "create directory",
        path: dir.to_owned(),
        source,
    })
}

/// Writes `<dir>/<stem>.crt` (0644) and `<dir>/<stem>.key` (0600), creating
/// `dir`. Without `overwrite`, an existing file is an error and nothing is
/// written. Returns the certificate and key paths.
pub fn write_pem_files(
    dir: &Path,
    stem: &str,
    issued: &Issued,
    overwrite: bool,
) -> Result<(PathBuf, PathBuf), PkiError> {
    create_dir(dir)?;
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    if !overwrite {
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(PkiError::Exists { path: p.clone() });
            }
        }
    }
    write_file(&key_path, issued.key_pem.as_bytes(), 0o600, overwrite)?;
    write_file(&cert_path, issued.cert_pem.as_bytes(), 0o644, overwrite)?;
    Ok((cert_path, key_path))
}

/// Writes `contents` to `path` with `mode` from the moment the file exists
/// (a key is never briefly world-readable). Without `overwrite` the file is
/// created exclusively; with it, a temporary file in the same directory is
/// renamed over `path`, so readers see the old or the new file, and the
/// mode is right even if the old file's was not.
pub fn write_file(
    path: &Path,
    contents: &[u8],
    mode: u32,
    overwrite: bool,
) -> Result<(), PkiError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| PkiError::Io {
            action: "write",
            path,
            source,
        }
    };
    let target = if overwrite {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp{}", std::process::id()));
        path.with_file_name(name)
    } else {
        path.to_owned()
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&target)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists && !overwrite {
                PkiError::Exists {
                    path: path.to_owned(),
                }
            } else {
                io_err(&target)(e)
            }
        })?;
    let written = f.write_all(contents).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = fs::remove_file(&target);
        return Err(io_err(&target)(e));
    }
    if overwrite {
        if let Err(e) = fs::rename(&target, path) {
            let _ = fs::remove_file(&target);
            return Err(io_err(path)(e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_util::{handshake, server_and_client};
    use std::os::unix::fs::PermissionsExt;

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "memgate-pki-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn node_cert_verifies_under_ca() {
        let ca = Ca::generate("test CA").unwrap();
        let node = ca
            .issue_node("node-1", &["localhost", "127.0.0.1"])
            .unwrap();
        for name in ["localhost", "127.0.0.1"] {
            let (s, c) = server_and_client(&ca, &node, None, None);
            let (sr, cr) = handshake(s, c, name).await;
            cr.unwrap();
            sr.unwrap();
        }
    }

    #[tokio::test]
    async fn reloaded_ca_issues_certs_that_verify_under_original() {
        let ca = Ca::generate("test CA").unwrap();
        let reloaded = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(reloaded.cert_pem(), ca.cert_pem());
        let node = reloaded.issue_node("node-2", &["node-2.internal"]).unwrap();
        // Trust only the original CA's certificate.
        let (s, c) = server_and_client(&ca, &node, None, None);
        let (sr, cr) = handshake(s, c, "node-2.internal").await;
        cr.unwrap();
        sr.unwrap();
    }

    #[test]
    fn from_pem_rejects_a_foreign_key_and_garbage() {
        let a = Ca::generate("a").unwrap();
        let b = Ca::generate("b").unwrap();
        assert!(matches!(
            Ca::from_pem(a.cert_pem(), &b.key_pem()),
            Err(PkiError::CaKeyMismatch)
        ));
        assert!(matches!(
            Ca::from_pem("nope", &a.key_pem()),
            Err(PkiError::LoadCa {
                what: "certificate",
                ..
            })
        ));
        assert!(matches!(
            Ca::from_pem(a.cert_pem(), "nope"),
            Err(PkiError::LoadCa {
                what: "private key",
                ..
            })
        ));
    }

    #[test]
    fn sans_parse_as_ip_or_dns() {
        assert_eq!(
            parse_san("10.0.0.1").unwrap(),
            SanType::IpAddress("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_san("[::1]").unwrap(),
            SanType::IpAddress("::1".parse().unwrap())
        );
        assert!(matches!(
            parse_san("node-1.example.com").unwrap(),
            SanType::DnsName(_)
        ));
        assert!(matches!(
            parse_san("bad name"),
            Err(PkiError::InvalidSan { .. })
        ));
        assert!(matches!(
            parse_san("nöde"),
            Err(PkiError::InvalidSan { .. })
        ));
        assert!(matches!(parse_san(""), Err(PkiError::InvalidSan { .. })));
    }

    #[test]
    fn issued_debug_redacts_key() {
        let ca = Ca::generate("t").unwrap();
        let c = ca.issue_client("app").unwrap();
        let dbg = format!("{c:?} {ca:?}");
        assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
        assert!(c.key_pem.contains("BEGIN PRIVATE KEY"));
    }

    #[test]
    fn files_get_modes_and_are_not_overwritten() {
        let dir = tempdir("files");
        let ca = Ca::generate("t").unwrap();
        let (crt, key) = ca.write_files(&dir, false).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&crt), 0o644);
        assert_eq!(fs::read_to_string(&crt).unwrap(), ca.cert_pem());

        // The CA is never replaced unless forced.
        let other = Ca::generate("other").unwrap();
        assert!(matches!(
            other.write_files(&dir, false),
            Err(PkiError::Exists { .. })
        ));
        assert_eq!(fs::read_to_string(&crt).unwrap(), ca.cert_pem());
        let (again, created) = Ca::load_or_create(&dir, "ignored").unwrap();
        assert!(!created);
        assert_eq!(again.cert_pem(), ca.cert_pem());
        other.write_files(&dir, true).unwrap();
        assert_eq!(fs::read_to_string(&crt).unwrap(), other.cert_pem());
        assert_eq!(mode(&key), 0o600);

        let node = ca.issue_node("node-1", &[]).unwrap();
        let (ncrt, nkey) = write_pem_files(&dir, "node-1", &node, false).unwrap();
        assert_eq!(mode(&nkey), 0o600);
        assert_eq!(mode(&ncrt), 0o644);
        assert!(matches!(
            write_pem_files(&dir, "node-1", &node, false),
            Err(PkiError::Exists { .. })
        ));
        // Overwriting fixes a too-open mode.
        fs::set_permissions(&nkey, fs::Permissions::from_mode(0o644)).unwrap();
        write_pem_files(&dir, "node-1", &node, true).unwrap();
        assert_eq!(mode(&nkey), 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_or_create_creates_once() {
        let dir = tempdir("loc").join("certs");
        let (ca, created) = Ca::load_or_create(&dir, "t").unwrap();
        assert!(created);
        let (again, created) = Ca::load_or_create(&dir, "t").unwrap();
        assert!(!created);
        assert_eq!(again.cert_pem(), ca.cert_pem());
        fs::remove_file(dir.join(CA_CERT_FILE)).unwrap();
        assert!(matches!(
            Ca::load_or_create(&dir, "t"),
            Err(PkiError::Exists { .. })
        ));
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }
}
