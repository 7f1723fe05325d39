//! The login directory: the caches file indexed by username, and the
//! login check that fails the same way, in about the same time, for every
//! reason. It also holds each credential's verified-secret cache
//! ([`auth::Verified`]) and the attempts it refused after a hash
//! ([`Refused`]); a reload or admin change builds a new directory, which is
//! what drops both on any change.

use std::collections::HashMap;
use std::fmt;

use super::file::{CacheConfig, CachesFile, Capabilities, Invalid};
use super::refused::Refused;
use crate::auth::{self, Secret, Verified};

/// A successful login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOk {
    /// The cache the credential belongs to.
    pub cache_id: String,
    /// Its position in [`Directory::caches`].
    pub cache_index: usize,
    /// The username that logged in.
    pub username: String,
    /// Whether it is the cache's primary credential.
    pub primary: bool,
    /// What it may do.
    pub caps: Capabilities,
}

/// A failed login. Deliberately says nothing about why: unknown user,
/// wrong password and disabled cache look the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Authentication failed.
    #[error("authentication failure")]
    Failed,
}

/// The caches with a username index, for logins. Rebuild and swap it (e.g.
/// behind an `ArcSwap`/`RwLock<Arc<_>>`) to reload.
pub struct Directory {
    file: CachesFile,
    /// Username to its position in `all`.
    index: HashMap<Box<[u8]>, usize>,
    /// Every (cache, credential) position, for decoy verification.
    all: Vec<(usize, usize)>,
    /// The verified-secret cache of each credential in `all`.
    verified: Vec<Verified>,
    /// Attempts refused after a hash, refused again without one.
    refused: Refused,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("caches", &self.file.caches.len())
            .field("credentials", &self.all.len())
            .finish()
    }
}

impl Directory {
    /// Validates `file` and indexes its usernames.
    pub fn new(file: CachesFile) -> Result<Self, Invalid> {
        file.validate()?;
        let mut index = HashMap::new();
        let mut all = Vec::new();
        for (ci, cache) in file.caches.iter().enumerate() {
            for (ki, cred) in cache.credentials.iter().enumerate() {
                index.insert(cred.username.as_bytes().into(), all.len());
                all.push((ci, ki));
            }
        }
        let verified = all.iter().map(|_| Verified::default()).collect();
        Ok(Directory {
            file,
            index,
            all,
            verified,
            refused: Refused::default(),
        })
    }

    /// The caches, in file order.
    pub fn caches(&self) -> &[CacheConfig] {
        &self.file.caches
    }

    /// The whole file.
    pub fn file(&self) -> &CachesFile {
        &self.file
    }

    /// The id of the cache a username belongs to, without checking any
    /// password: only for attributing failed logins to a cache's
    /// `auth_errors`. Never tell the client.
    pub fn cache_of_username(&self, username: &[u8]) -> Option<usize> {
        self.index.get(username).map(|&slot| self.all[slot].0)
    }

    /// Checks a login. Unknown users, wrong passwords and disabled caches
    /// all fail with the same [`LoginError::Failed`], and take about as
    /// long: for an unknown username the password is verified (and the
    /// result ignored) against a real credential chosen by a keyed hash of
    /// the username, so the time spent has the same distribution as for
    /// existing users, and repeats for the same username.
    pub fn login(&self, username: &[u8], password: &[u8]) -> Result<LoginOk, LoginError> {
        self.login_checked(username, password, true)
            .unwrap_or(Err(LoginError::Failed))
    }

    /// [`Directory::login`] when it needs no password hash; `None` when only
    /// a hash can tell (milliseconds of a core: the caller runs
    /// [`Directory::login`] off the async workers).
    pub fn login_unhashed(
        &self,
        username: &[u8],
        password: &[u8],
    ) -> Option<Result<LoginOk, LoginError>> {
        self.login_checked(username, password, false)
    }

    fn login_checked(
        &self,
        username: &[u8],
        password: &[u8],
        may_hash: bool,
    ) -> Option<Result<LoginOk, LoginError>> {
        let enabled = |ok: LoginOk| match self.file.caches[ok.cache_index].disabled {
            true => Err(LoginError::Failed),
            false => Ok(ok),
        };
        if let Some(decided) = self.verify_checked(username, password, false) {
            return Some(decided.and_then(enabled));
        }
        // Only a hash can tell, unless this very attempt was refused
        // after one before (for any reason: a disabled cache's right
        // password too, so that a repeat fails as fast as a wrong one's).
        if self.refused.contains(username, password) {
            return Some(Err(LoginError::Failed));
        }
        if !may_hash {
            return None;
        }
        let result = self
            .verify_checked(username, password, true)
            .unwrap_or(Err(LoginError::Failed))
            .and_then(enabled);
        if result.is_err() {
            self.refused.insert(username, password);
        }
        Some(result)
    }

    /// [`Directory::login`] without the disabled check: only for the admin
    /// API, which tells a disabled cache's owner so they can enable it.
    pub fn verify(&self, username: &[u8], password: &[u8]) -> Result<LoginOk, LoginError> {
        self.verify_checked(username, password, true)
            .unwrap_or(Err(LoginError::Failed))
    }

    /// The check itself; without `may_hash`, `None` wherever it would hash.
    fn verify_checked(
        &self,
        username: &[u8],
        password: &[u8],
        may_hash: bool,
    ) -> Option<Result<LoginOk, LoginError>> {
        let Some(&slot) = self.index.get(username) else {
            let decoy = self.decoy(username);
            if may_hash || decoy.is_plain() {
                std::hint::black_box(auth::verify(decoy, password));
                return Some(Err(LoginError::Failed));
            }
            return None;
        };
        let (ci, ki) = self.all[slot];
        let cache = &self.file.caches[ci];
        let cred = &cache.credentials[ki];
        let ok = match (cache.disabled, may_hash) {
            // Its logins fail anyway. Verified in full every time, so that
            // the right password is no faster to fail than a wrong one.
            (true, true) => auth::verify(&cred.secret, password),
            (true, false) => auth::verify_unhashed(&cred.secret, password)?,
            (false, true) => auth::verify_cached(
                &cred.secret,
                cred.username.as_bytes(),
                &self.verified[slot],
                password,
            ),
            (false, false) => auth::verify_cached_unhashed(
                &cred.secret,
                cred.username.as_bytes(),
                &self.verified[slot],
                password,
            )?,
        };
        if !ok {
            return Some(Err(LoginError::Failed));
        }
        Some(Ok(LoginOk {
            cache_id: cache.id.clone(),
            cache_index: ci,
            username: cred.username.clone(),
            primary: cred.primary,
            caps: cred.caps,
        }))
    }

    /// The verified-secret cache of `username`'s credential.
    #[cfg(test)]
    pub(crate) fn verified(&self, username: &[u8]) -> Option<&Verified> {
        self.index.get(username).map(|&slot| &self.verified[slot])
    }

    /// The secret an unknown username's password is checked against.
    fn decoy(&self, username: &[u8]) -> &Secret {
        static NOBODY: std::sync::OnceLock<Secret> = std::sync::OnceLock::new();
        if self.all.is_empty() {
            return NOBODY.get_or_init(|| Secret::Plain("\0no credentials\0".to_owned()));
        }
        let d = auth::keyed_digest(username);
        let n = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
        let (ci, ki) = self.all[(n % self.all.len() as u64) as usize];
        &self.file.caches[ci].credentials[ki].secret
    }
}
