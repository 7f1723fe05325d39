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
//! runs. A client that connects per request would pay that on every
//! connection, so each credential keeps a [`Verified`] slot: after the first
//! successful verification it holds a keyed MAC of (username, stored hash,
//! password), and later logins with the same password cost one HMAC (about a
//! microsecond). Once it is filled, a wrong password costs one HMAC too:
//! a hash verifies exactly one password (two passing would be an argon2 or
//! scrypt collision), so a candidate whose tag differs is not it. Plain-text
//! secrets cost microseconds anyway. Before the right password has been
//! seen, wrong ones are hashed, as often as [`throttle`] allows and once
//! each (the login directory remembers refused attempts).
//!
//! # Timing
//! Plain-text passwords are compared as HMAC-SHA256 tags under a random
//! per-process key, with [`subtle::ConstantTimeEq`]: the comparison takes
//! the same time whatever the stored password's length and content. A
//! [`Verified`] tag is compared the same way.

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

/// One credential's verified-secret cache: empty until its password has
/// been verified once, then the MAC of (username, stored hash, password)
/// under the per-process key.
///
/// It holds no plaintext, and without the process key the tag lets nobody
/// test guesses offline. Only the right password can fill it, so one slot
/// per credential is all the cache ever needs: its size is bounded by the
/// caches file. It lives in the login `Directory`, which every reload and
/// admin change rebuilds, so any change of the credentials drops it; and
/// because the tag covers the stored hash, it could not survive a rotation
/// even if it were kept.
#[derive(Default)]
pub struct Verified(OnceLock<[u8; 32]>);

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.is_filled() { "filled" } else { "empty" };
        write!(f, "Verified({state}, [redacted])")
    }
}

impl Verified {
    /// Whether a password has been verified into this slot.
    pub fn is_filled(&self) -> bool {
        self.0.get().is_some()
    }
}

/// The tag a [`Verified`] slot holds: lengths first, so no two
/// (username, hash, password) triples share an input.
fn verified_tag(username: &[u8], hash: &PhcHash, candidate: &[u8]) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(hmac_key());
    ctx.update(b"memgate verified secret\0");
    for part in [username, hash.phc.as_bytes(), candidate] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// [`verify`] with the credential's [`Verified`] slot: a hashed secret is
/// hashed only until its password has been verified once; afterwards the
/// same password costs one HMAC and a constant-time comparison. `username`
/// is the credential's own, binding the tag to it.
pub fn verify_cached(stored: &Secret, username: &[u8], slot: &Verified, candidate: &[u8]) -> bool {
    if let Some(known) = verify_cached_unhashed(stored, username, slot, candidate) {
        return known;
    }
    let Secret::Hash(hash) = stored else {
        return verify(stored, candidate);
    };
    if !hash.verify(candidate) {
        return false;
    }
    // Another login may have filled it meanwhile, with the same tag.
    let _ = slot.0.set(verified_tag(username, hash, candidate));
    true
}

/// What [`verify_cached`] can decide without hashing: a plain secret, or
/// a hashed one whose slot is filled (this very password, or another, which
/// the hash would refuse). `None` means only the hash can tell, which takes
/// milliseconds of a core: the caller runs [`verify_cached`] where that
/// blocks no async worker.
pub fn verify_cached_unhashed(
    stored: &Secret,
    username: &[u8],
    slot: &Verified,
    candidate: &[u8],
) -> Option<bool> {
    let Secret::Hash(hash) = stored else {
        return Some(verify(stored, candidate));
    };
    let known = slot.0.get()?;
    let tag = verified_tag(username, hash, candidate);
    Some(known.ct_eq(&tag).into())
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

/// What [`verify`] can decide without hashing: only a plain secret.
pub fn verify_unhashed(stored: &Secret, candidate: &[u8]) -> Option<bool> {
    stored.is_plain().then(|| verify(stored, candidate))
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

pub mod hashers;
pub mod throttle;

#[cfg(test)]
mod tests;
