//! Passwords: hashing new ones, and checking a login attempt against a
//! stored [`Secret`].
//!
//! A stored secret is either a plain-text password or a PHC hash string
//! (`$argon2id$…`, `$argon2i$…`, `$argon2d$…`, `$scrypt$…`). Hashes are
//! parsed when the caches file is loaded ([`Secret::from_hash`]), so a
//! malformed one is a config error rather than a login that can never
//! succeed.
//!
//! # Cost
//! [`hash_password`] uses argon2id with OWASP's recommended m=19456 KiB,
//! t=2, p=1. Verifying one such hash takes roughly 20–30 ms of one core in
//! an optimised build (more in a debug build), and 19 MiB of memory while it
//! runs. Every login verifies once, so a client that reconnects in a tight
//! loop costs that much CPU per connection; a cache of recently verified
//! (username, password digest) pairs could be added if that matters.
//! Plain-text secrets cost microseconds.
//!
//! # Timing
//! Plain-text passwords are compared as HMAC-SHA256 tags under a random
//! per-process key, with [`subtle::ConstantTimeEq`]: the comparison takes
//! the same time whatever the stored password's length and content.

use std::fmt;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ring::hmac;
use subtle::ConstantTimeEq;

/// argon2id memory cost for new hashes, KiB (OWASP recommendation).
pub const ARGON2_M_COST: u32 = 19_456;
/// argon2id iterations for new hashes.
pub const ARGON2_T_COST: u32 = 2;
/// argon2id parallelism for new hashes.
pub const ARGON2_P_COST: u32 = 1;

/// What went wrong with a password or password hash. Never contains the
/// password or the hash itself.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The stored hash is not a PHC string we can verify.
    #[error("password_hash is not a valid PHC string: {reason}")]
    MalformedHash {
        /// Why, without the hash itself.
        reason: String,
    },
    /// The PHC string names an algorithm we do not support.
    #[error("password_hash uses unsupported algorithm {algorithm:?} (supported: argon2id, argon2i, argon2d, scrypt)")]
    UnsupportedAlgorithm {
        /// The `$<id>$` of the PHC string.
        algorithm: String,
    },
    /// Hashing a new password failed.
    #[error("could not hash password: {reason}")]
    Hashing {
        /// The hasher's reason.
        reason: String,
    },
}

/// The password-hashing algorithm of a stored [`Secret::Hash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// `$argon2id$`
    Argon2id,
    /// `$argon2i$`
    Argon2i,
    /// `$argon2d$`
    Argon2d,
    /// `$scrypt$`
    Scrypt,
}

impl HashAlgorithm {
    /// The PHC identifier.
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Argon2id => "argon2id",
            HashAlgorithm::Argon2i => "argon2i",
            HashAlgorithm::Argon2d => "argon2d",
            HashAlgorithm::Scrypt => "scrypt",
        }
    }
}

/// A validated PHC hash string. Construct with [`Secret::from_hash`].
#[derive(Clone, PartialEq, Eq)]
pub struct PhcHash {
    phc: String,
    algorithm: HashAlgorithm,
}

impl PhcHash {
    /// The PHC string exactly as given (for saving the caches file).
    pub fn as_str(&self) -> &str {
        &self.phc
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> HashAlgorithm {
        self.algorithm
    }

    fn parse(phc: &str) -> Result<Self, AuthError> {
        let malformed = |e: argon2::password_hash::Error| AuthError::MalformedHash {
            reason: e.to_string(),
        };
        let hash = PasswordHash::new(phc).map_err(malformed)?;
        let algorithm = match hash.algorithm.as_str() {
            "argon2id" => HashAlgorithm::Argon2id,
            "argon2i" => HashAlgorithm::Argon2i,
            "argon2d" => HashAlgorithm::Argon2d,
            "scrypt" => HashAlgorithm::Scrypt,
            other => {
                return Err(AuthError::UnsupportedAlgorithm {
                    algorithm: other.to_owned(),
                })
            }
        };
        if hash.salt.is_none() || hash.hash.is_none() {
            return Err(AuthError::MalformedHash {
                reason: "missing salt or hash output".to_owned(),
            });
        }
        // Check the parameters the verifier will need, now rather than at
        // the first login.
        match algorithm {
            HashAlgorithm::Scrypt => {
                scrypt::Params::try_from(&hash).map_err(malformed)?;
                if hash.version.is_some() {
                    return Err(AuthError::MalformedHash {
                        reason: "scrypt hashes have no version field".to_owned(),
                    });
                }
            }
            _ => {
                Params::try_from(&hash).map_err(malformed)?;
                if let Some(v) = hash.version {
                    Version::try_from(v).map_err(|e| AuthError::MalformedHash {
                        reason: e.to_string(),
                    })?;
                }
            }
        }
        Ok(PhcHash {
            phc: phc.to_owned(),
            algorithm,
        })
    }

    fn verify(&self, candidate: &[u8]) -> bool {
        // Parsed successfully at load time, so this cannot fail.
        let Ok(hash) = PasswordHash::new(&self.phc) else {
            return false;
        };
        match self.algorithm {
            HashAlgorithm::Scrypt => scrypt::Scrypt.verify_password(candidate, &hash).is_ok(),
            _ => Argon2::default().verify_password(candidate, &hash).is_ok(),
        }
    }
}

/// A credential's stored password.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A plain-text password, as in the hosted service's credentials.
    Plain(String),
    /// A password hash.
    Hash(PhcHash),
}

impl Secret {
    /// Parses and validates a PHC hash string.
    pub fn from_hash(phc: &str) -> Result<Secret, AuthError> {
        PhcHash::parse(phc).map(Secret::Hash)
    }

    /// Whether this is a plain-text password.
    pub fn is_plain(&self) -> bool {
        matches!(self, Secret::Plain(_))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain([redacted])"),
            Secret::Hash(h) => write!(f, "Secret::Hash({}, [redacted])", h.algorithm.as_str()),
        }
    }
}

impl fmt::Debug for PhcHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhcHash({}, [redacted])", self.algorithm.as_str())
    }
}

/// The per-process key for [`keyed_digest`].
fn hmac_key() -> &'static hmac::Key {
    static KEY: OnceLock<hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        hmac::Key::new(hmac::HMAC_SHA256, &bytes)
    })
}

/// HMAC-SHA256 of `data` under a random per-process key: a fixed-length
/// digest whose value reveals nothing about `data` outside this process.
pub fn keyed_digest(data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(hmac_key(), data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether `candidate` is the password `stored` holds. Plain passwords are
/// compared in constant time (see the [module docs](self)); hashes are
/// verified with their own algorithm and parameters.
pub fn verify(stored: &Secret, candidate: &[u8]) -> bool {
    match stored {
        Secret::Plain(p) => {
            let a = keyed_digest(p.as_bytes());
            let b = keyed_digest(candidate);
            a.ct_eq(&b).into()
        }
        Secret::Hash(h) => h.verify(candidate),
    }
}

/// The argon2id hasher for new passwords.
fn hasher() -> Argon2<'static> {
    let params = Params::new(ARGON2_M_COST, ARGON2_T_COST, ARGON2_P_COST, None)
        .expect("argon2 parameters are valid constants");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `plain` with argon2id (m=19456 KiB, t=2, p=1) and a random salt,
/// returning the PHC string for a caches file's `password_hash`.
pub fn hash_password(plain: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    hasher()
        .hash_password(plain.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hashing {
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn plain_verifies_in_constant_time_form() {
        let s = Secret::Plain("hunter2".into());
        assert!(verify(&s, b"hunter2"));
        assert!(!verify(&s, b"hunter3"));
        assert!(!verify(&s, b"hunter"));
        assert!(!verify(&s, b"hunter22"));
        assert!(!verify(&s, b""));
        assert!(verify(&Secret::Plain(String::new()), b""));
    }

    #[test]
    fn argon2id_round_trip_and_timing() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let s = Secret::from_hash(&phc).unwrap();
        let t = Instant::now();
        assert!(verify(&s, b"correct horse"));
        let took = t.elapsed();
        assert!(!verify(&s, b"correct horse "));
        eprintln!("argon2id m=19456 t=2 p=1 verify: {took:?}");
        // Two hashes of the same password differ (random salt).
        assert_ne!(hash_password("correct horse").unwrap(), phc);
    }

    #[test]
    fn argon2i_argon2d_and_scrypt_hashes_verify() {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let small = Params::new(64, 1, 1, None).unwrap();
        for (alg, want) in [
            (Algorithm::Argon2i, HashAlgorithm::Argon2i),
            (Algorithm::Argon2d, HashAlgorithm::Argon2d),
        ] {
            let phc = Argon2::new(alg, Version::V0x13, small.clone())
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string();
            let s = Secret::from_hash(&phc).unwrap();
            assert!(matches!(&s, Secret::Hash(h) if h.algorithm() == want && h.as_str() == phc));
            assert!(verify(&s, b"pw"));
            assert!(!verify(&s, b"pW"));
        }
        let phc = scrypt::Scrypt
            .hash_password_customized(
                b"pw",
                None,
                None,
                scrypt::Params::new(4, 8, 1, 32).unwrap(),
                &salt,
            )
            .unwrap()
            .to_string();
        assert!(phc.starts_with("$scrypt$"), "{phc}");
        let s = Secret::from_hash(&phc).unwrap();
        assert!(verify(&s, b"pw"));
        assert!(!verify(&s, b"px"));
    }

    #[test]
    fn malformed_hashes_are_rejected_at_load() {
        for bad in [
            "",
            "argon2id",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
            "$argon2id$v=19$m=1,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=99$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=19$x=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
            "$scrypt$ln=99,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            let e = Secret::from_hash(bad).unwrap_err();
            assert!(matches!(e, AuthError::MalformedHash { .. }), "{bad:?}: {e}");
        }
        let e = Secret::from_hash("$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
            .unwrap_err();
        assert!(
            matches!(e, AuthError::UnsupportedAlgorithm { ref algorithm } if algorithm == "pbkdf2-sha256"),
            "{e}"
        );
    }

    #[test]
    fn debug_redacts() {
        let p = Secret::Plain("hunter2".into());
        assert_eq!(format!("{p:?}"), "Secret::Plain([redacted])");
        let phc = hash_password("hunter2").unwrap();
        let h = Secret::from_hash(&phc).unwrap();
        let dbg = format!("{h:?}");
        assert!(!dbg.contains(&phc[20..]), "{dbg}");
        assert!(dbg.contains("argon2id"), "{dbg}");
        assert!(p.is_plain() && !h.is_plain());
    }
}
