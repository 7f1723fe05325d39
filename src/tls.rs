//! rustls server and client configs from PEM, always with the `ring`
//! provider and TLS 1.2 + 1.3.
//!
//! - Node side: [`server_config`], optionally requiring client certificates
//!   signed by a given CA (mutual TLS).
//! - Sidecar side: [`client_config`], trusting ONLY the given CA (never the
//!   system roots), with the standard WebPki verifier, so the whole chain,
//!   the validity period and the hostname (or IP SAN) are all checked.
//! - PEM loading from files ([`load_certs`], [`load_key`], [`load_roots`])
//!   or memory ([`certs_from_pem`], [`key_from_pem`], [`roots_from_pem`]),
//!   via `rustls_pki_types::pem::PemObject`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// How many TLS sessions a node remembers for stateful resumption (TLS 1.2
/// session ids). TLS 1.3 resumption uses stateless tickets.
const SERVER_SESSION_CACHE: usize = 1024;

/// What went wrong building a TLS config.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file or buffer could not be read or parsed.
    #[error("{source_name}: could not read {what}: {source}")]
    Pem {
        /// The file path, or "in-memory PEM".
        source_name: String,
        /// "certificates" / "private key".
        what: &'static str,
        /// The parser's reason.
        #[source]
        source: pem::Error,
    },
    /// The PEM held no `CERTIFICATE` section.
    #[error("{source_name}: no certificates found (expected at least one \"-----BEGIN CERTIFICATE-----\" section)")]
    NoCertificates {
        /// The file path, or "in-memory PEM".
        source_name: String,
    },
    /// The PEM held no private key section.
    #[error("{source_name}: no private key found (expected a PKCS#8, PKCS#1 or SEC1 \"PRIVATE KEY\" section)")]
    NoPrivateKey {
        /// The file path, or "in-memory PEM".
        source_name: String,
    },
    /// A CA certificate could not be used as a trust anchor.
    #[error("{source_name}: certificate #{index} is not a usable CA certificate: {source}")]
    BadCaCertificate {
        /// The file path, or "in-memory PEM".
        source_name: String,
        /// Its position in the file, from 1.
        index: usize,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// rustls rejected the config, e.g. a key that does not match its
    /// certificate, or an unsupported key type.
    #[error("invalid {what}: {source}")]
    Config {
        /// Which config, e.g. "server certificate and key".
        what: &'static str,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built.
    #[error("invalid client CA for mutual TLS: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// A host is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {host:?}: not a DNS name or an IP address")]
    InvalidServerName {
        /// The host as given.
        host: String,
    },
}

const IN_MEMORY: &str = "in-memory PEM";

/// The one crypto provider memgate uses: ring's, with AES-128-GCM preferred
/// over AES-256-GCM. Both are TLS 1.3's own suites; 128-bit AES takes ten
/// rounds where 256-bit takes fourteen, and on a cache's small records the
/// rounds are a large part of the cipher's work (benches/NOTES.md). Every
/// default suite stays, and a server that enforces its own order still
/// has its way.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| *suite != TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

fn collect_certs<I>(iter: I, source_name: &str) -> Result<Vec<CertificateDer<'static>>, TlsError>
where
    I: Iterator<Item = Result<CertificateDer<'static>, pem::Error>>,
{
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            source_name: source_name.to_owned(),
            what: "certificates",
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            source_name: source_name.to_owned(),
        });
    }
    Ok(certs)
}

fn key_result(
    r: Result<PrivateKeyDer<'static>, pem::Error>,
    source_name: &str,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    r.map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            source_name: source_name.to_owned(),
        },
        source => TlsError::Pem {
            source_name: source_name.to_owned(),
            what: "private key",
            source,
        },
    })
}

/// All certificates in a PEM file, in order (leaf first for a chain).
pub fn load_certs(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let iter = CertificateDer::pem_file_iter(path).map_err(|source| TlsError::Pem {
        source_name: name.clone(),
        what: "certificates",
        source,
    })?;
    collect_certs(iter, &name)
}

/// All certificates in PEM bytes, in order.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    collect_certs(CertificateDer::pem_slice_iter(pem), IN_MEMORY)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let path = path.as_ref();
    key_result(
        PrivateKeyDer::from_pem_file(path),
        &path.display().to_string(),
    )
}

/// The first private key in PEM bytes.
pub fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    key_result(PrivateKeyDer::from_pem_slice(pem), IN_MEMORY)
}

fn roots(
    certs: Vec<CertificateDer<'static>>,
    source_name: &str,
) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        store
            .add(cert)
            .map_err(|source| TlsError::BadCaCertificate {
                source_name: source_name.to_owned(),
                index: i + 1,
                source,
            })?;
    }
    Ok(store)
}

/// A trust store holding exactly the CA certificates in a PEM file.
pub fn load_roots(path: impl AsRef<Path>) -> Result<RootCertStore, TlsError> {
    let path = path.as_ref();
    roots(load_certs(path)?, &path.display().to_string())
}

/// A trust store holding exactly the CA certificates in PEM bytes.
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    roots(certs_from_pem(pem)?, IN_MEMORY)
}

/// A node's TLS config: `cert_chain` (leaf first) and its `key`; with
/// `client_ca`, every client must present a certificate that chains to it
/// (mutual TLS), otherwise no client certificate is asked for. No ALPN.
/// Resumption: TLS 1.3 tickets (rotating keys) and a TLS 1.2 session cache.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<RootCertStore>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            what: "server protocol versions",
            source,
        })?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(ca), provider).build()?,
        ),
    };
    let mut config = builder
        .with_single_cert(cert_chain, key)
        .map_err(|source| TlsError::Config {
            what: "server certificate and key",
            source,
        })?;
    config.session_storage = ServerSessionMemoryCache::new(SERVER_SESSION_CACHE);
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|source| TlsError::Config {
        what: "session ticketer",
        source,
    })?;
    Ok(Arc::new(config))
}

/// A sidecar's TLS config: trusts ONLY the CA certificates in
/// `ca_roots_pem`; presents `client_cert` (chain, key) if given. Hostnames
/// are verified by the standard WebPki verifier. Resumption uses rustls's
/// default in-memory session cache.
pub fn client_config(
    ca_roots_pem: &[u8],
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_with_roots(roots_from_pem(ca_roots_pem)?, client_cert)
}

/// [`server_config`] from a PEM certificate chain file and key file.
pub fn server_config_from_files(
    cert: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config(load_certs(cert)?, load_key(key)?, None)
}

/// [`client_config`] from a CA file and an optional client certificate and key file.
/// A digest of the given files' contents (a file that cannot be read counts
/// as its error), so that a reload can tell whether TLS inputs changed. Not a
/// security boundary: it only decides whether pooled connections are kept.
pub fn files_fingerprint<'a>(paths: impl IntoIterator<Item = &'a Path>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in paths {
        path.hash(&mut hasher);
        match std::fs::read(path) {
            Ok(bytes) => bytes.hash(&mut hasher),
            Err(error) => error.kind().hash(&mut hasher),
        }
    }
    hasher.finish()
}

pub fn client_config_from_files(
    ca: impl AsRef<Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let client = match client {
        Some((cert, key)) => Some((load_certs(cert)?, load_key(key)?)),
        None => None,
    };
    client_config_with_roots(load_roots(ca)?, client)
}

/// [`client_config`] with an already-built trust store.
pub fn client_config_with_roots(
    roots: RootCertStore,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| match e {
            rustls::server::VerifierBuilderError::NoRootAnchors => TlsError::NoCertificates {
                source_name: "CA roots".to_owned(),
            },
            e => TlsError::ClientVerifier(e),
        })?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            what: "client protocol versions",
            source,
        })?
        .with_webpki_verifier(verifier);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|source| TlsError::Config {
                what: "client certificate and key",
                source,
            })?,
    };
    Ok(Arc::new(config))
}

/// The name to verify a node's certificate against: a DNS name, or an IP
/// address (IPv6 with or without brackets), which must then be an IP SAN.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::InvalidServerName {
        host: host.to_owned(),
    })
}

/// Shared by the tls and pki tests: configs from in-memory PKI and a real
/// handshake over an in-memory duplex pipe.
#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use crate::pki::{Ca, Issued};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server config for `node` (requiring client certs from `client_ca`
    /// if given), and a client config trusting `ca` (presenting
    /// `client_cert` if given).
    pub fn server_and_client(
        ca: &Ca,
        node: &Issued,
        client_ca: Option<&Ca>,
        client_cert: Option<&Issued>,
    ) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let client_roots = client_ca.map(|c| roots_from_pem(c.cert_pem().as_bytes()).unwrap());
        let server = server_config(
            certs_from_pem(node.cert_pem.as_bytes()).unwrap(),
            key_from_pem(node.key_pem.as_bytes()).unwrap(),
            client_roots,
        )
        .unwrap();
        let cert = client_cert.map(|c| {
            (
                certs_from_pem(c.cert_pem.as_bytes()).unwrap(),
                key_from_pem(c.key_pem.as_bytes()).unwrap(),
            )
        });
        let client = client_config(ca.cert_pem().as_bytes(), cert).unwrap();
        (server, client)
    }

    /// Handshakes and exchanges one request/reply; returns the server's and
    /// the client's outcome.
    pub async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> (Result<(), String>, Result<(), String>) {
        let (c_io, s_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let connector = tokio_rustls::TlsConnector::from(client);
        let name = server_name(name).unwrap();
        let server = async move {
            let mut s = acceptor.accept(s_io).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            assert_eq!(&buf, b"ping");
            s.write_all(b"pong").await.map_err(|e| e.to_string())?;
            s.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        let client = async move {
            let mut c = connector
                .connect(name, c_io)
                .await
                .map_err(|e| e.to_string())?;
            c.write_all(b"ping").await.map_err(|e| e.to_string())?;
            c.flush().await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            assert_eq!(&buf, b"pong");
            Ok::<_, String>(())
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(server, client)
        })
        .await
        .expect("handshake hung")
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{handshake, server_and_client};
    use super::*;
    use crate::pki::{Ca, CertSpec, Usage};
    use std::time::{Duration, SystemTime};

    #[tokio::test]
    async fn handshake_succeeds_with_right_ca_and_name() {
        let ca = Ca::generate("ca").unwrap();
        let node = ca
            .issue_node("node", &["node.test", "127.0.0.1", "::1"])
            .unwrap();
        for name in ["node.test", "127.0.0.1", "::1", "[::1]"] {
            let (s, c) = server_and_client(&ca, &node, None, None);
            let (sr, cr) = handshake(s, c, name).await;
            assert_eq!((sr, cr), (Ok(()), Ok(())), "{name}");
        }
    }

    #[tokio::test]
    async fn handshake_over_tcp_loopback() {
        let ca = Ca::generate("ca").unwrap();
        let node = ca.issue_node("node", &["localhost"]).unwrap();
        let (s, c) = server_and_client(&ca, &node, None, None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut tls = tokio_rustls::TlsAcceptor::from(s)
                .accept(sock)
                .await
                .unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut tls, b"hi")
                .await
                .unwrap();
            tokio::io::AsyncWriteExt::shutdown(&mut tls).await.unwrap();
        });
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(c)
            .connect(server_name("localhost").unwrap(), sock)
            .await
            .unwrap();
        // Our own order: AES-128-GCM first (see `provider`).
        let suite = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut got)
            .await
            .unwrap();
        assert_eq!(got, b"hi");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn cert_from_another_ca_is_refused() {
        let ca = Ca::generate("ca").unwrap();
        let rogue = Ca::generate("ca").unwrap(); // same name, different key
        let node = rogue.issue_node("node", &["node.test"]).unwrap();
        let (s, c) = server_and_client(&ca, &node, None, None);
        let (_, cr) = handshake(s, c, "node.test").await;
        let e = cr.unwrap_err();
        assert!(
            e.contains("UnknownIssuer") || e.contains("BadSignature"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn wrong_hostname_is_refused() {
        let ca = Ca::generate("ca").unwrap();
        let node = ca.issue_node("node", &["node.test", "10.0.0.1"]).unwrap();
        for name in ["other.test", "10.0.0.2"] {
            let (s, c) = server_and_client(&ca, &node, None, None);
            let (_, cr) = handshake(s, c, name).await;
            let e = cr.unwrap_err();
            assert!(e.contains("not valid for name"), "{name}: {e}");
        }
    }

    #[tokio::test]
    async fn expired_cert_is_refused() {
        let ca = Ca::generate("ca").unwrap();
        let now = SystemTime::now();
        let spec = CertSpec {
            not_before: now - Duration::from_secs(10 * 86_400),
            not_after: now - Duration::from_secs(86_400),
            ..CertSpec::new("node", &["node.test"], Usage::Server)
        };
        let node = ca.issue(&spec).unwrap();
        let (s, c) = server_and_client(&ca, &node, None, None);
        let (_, cr) = handshake(s, c, "node.test").await;
        let e = cr.unwrap_err();
        assert!(e.contains("expired"), "{e}");
    }

    #[tokio::test]
    async fn client_cert_is_not_a_server_cert() {
        let ca = Ca::generate("ca").unwrap();
        let spec = CertSpec::new("node", &["node.test"], Usage::Client);
        let node = ca.issue(&spec).unwrap();
        let (s, c) = server_and_client(&ca, &node, None, None);
        let (_, cr) = handshake(s, c, "node.test").await;
        assert!(cr.is_err());
    }

    #[tokio::test]
    async fn mutual_tls_accepts_good_client_cert() {
        let ca = Ca::generate("ca").unwrap();
        let node = ca.issue_node("node", &["node.test"]).unwrap();
        let app = ca.issue_client("app").unwrap();
        let (s, c) = server_and_client(&ca, &node, Some(&ca), Some(&app));
        let (sr, cr) = handshake(s, c, "node.test").await;
        assert_eq!((sr, cr), (Ok(()), Ok(())));
    }

    #[tokio::test]
    async fn mutual_tls_refuses_missing_or_foreign_client_cert() {
        let ca = Ca::generate("ca").unwrap();
        let other = Ca::generate("other").unwrap();
        let node = ca.issue_node("node", &["node.test"]).unwrap();
        let (s, c) = server_and_client(&ca, &node, Some(&ca), None);
        let (sr, cr) = handshake(s, c, "node.test").await;
        let e = sr.unwrap_err();
        assert!(e.contains("certificate"), "{e}");
        assert!(cr.is_err());

        let foreign = other.issue_client("app").unwrap();
        let (s, c) = server_and_client(&ca, &node, Some(&ca), Some(&foreign));
        let (sr, _) = handshake(s, c, "node.test").await;
        assert!(sr.is_err());
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("node-1.example.com").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name("10.1.2.3").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("::1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("bad name"),
            Err(TlsError::InvalidServerName { .. })
        ));
        assert!(matches!(
            server_name(""),
            Err(TlsError::InvalidServerName { .. })
        ));
    }

    #[test]
    fn pem_errors_name_the_source() {
        let e = certs_from_pem(b"nothing here").unwrap_err();
        assert!(matches!(e, TlsError::NoCertificates { .. }), "{e}");
        let e = key_from_pem(b"nothing here").unwrap_err();
        assert!(matches!(e, TlsError::NoPrivateKey { .. }), "{e}");
        let e = load_certs("/nonexistent/memgate/node.crt").unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/memgate/node.crt"),
            "{e}"
        );
        let e = load_key("/nonexistent/memgate/node.key").unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/memgate/node.key"),
            "{e}"
        );
        let e = client_config(b"", None).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificates { .. }), "{e}");
    }

    #[test]
    fn files_load_and_mismatched_key_is_refused() {
        let ca = Ca::generate("ca").unwrap();
        let node = ca.issue_node("node", &["node.test"]).unwrap();
        let other = ca.issue_node("other", &["other.test"]).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "memgate-tls-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        crate::pki::write_pem_files(&dir, "node", &node, false).unwrap();
        let chain = load_certs(dir.join("node.crt")).unwrap();
        assert_eq!(chain.len(), 1);
        let key = load_key(dir.join("node.key")).unwrap();
        server_config(chain.clone(), key, None).unwrap();
        let wrong = key_from_pem(other.key_pem.as_bytes()).unwrap();
        let e = server_config(chain, wrong, None).unwrap_err();
        assert!(matches!(e, TlsError::Config { .. }), "{e}");
        std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
        assert_eq!(load_roots(dir.join("ca.crt")).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
