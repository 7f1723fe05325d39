//! Tenants (caches) and their credentials: the caches TOML file, its
//! validation and atomic persistence, and the login [`Directory`].
//!
//! # File format
//! ```toml
//! [[cache]]
//! id = "1561"
//! memory_limit = "64MiB"   # this node's share of the cache; or an integer of bytes
//! disabled = false         # default false
//!
//! [[cache.credential]]
//! username = "15F38e"
//! password = "..."         # or password_hash = "$argon2id$..." (exactly one of the two)
//! primary = true           # default: see below
//! write = true             # default true
//! flush = true             # default true
//! api = true               # default true
//! ```
//! Sizes are parsed by [`crate::config::parse_size`]. Unknown keys are
//! errors, so a typo such as `pasword` cannot silently drop a field.
//!
//! # Rules
//! - Cache ids are non-empty, without whitespace or control characters,
//!   and unique.
//! - `memory_limit` is greater than zero.
//! - Usernames are non-empty, at most 250 bytes, without whitespace or
//!   control characters (they double as the key of an ASCII-auth `set`),
//!   and unique across ALL caches, so a login lands in exactly one cache.
//! - Each credential has exactly one of `password` / `password_hash`, and a
//!   plain password is not empty. Hashes are parsed at load time.
//! - **Primary:** at most one credential per cache says `primary = true`;
//!   if none does, the first credential is the primary. After loading,
//!   [`Credential::primary`] is the effective value, so every cache with
//!   credentials has exactly one primary.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::node::auth::{self, AuthError, Secret};
use crate::units::Size;

/// The longest username: a memcached key, as ASCII auth uses it as one.
pub const MAX_USERNAME_LEN: usize = 250;

/// The name errors use for a file parsed from a string.
const UNNAMED: &str = "<caches TOML>";

/// What a credential may do beyond reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Capabilities {
    /// Storage commands and the other mutations (delete, incr/decr, touch).
    pub write: bool,
    /// `flush_all`.
    pub flush: bool,
    /// The analytics HTTP API.
    pub api: bool,
}

impl Capabilities {
    /// Everything allowed: the default of a new credential.
    pub const ALL: Capabilities = Capabilities {
        write: true,
        flush: true,
        api: true,
    };
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities::ALL
    }
}

/// One credential of a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The SASL / ASCII-auth username.
    pub username: String,
    /// The stored password or hash (its Debug redacts).
    pub secret: Secret,
    /// Whether this is the cache's primary credential.
    pub primary: bool,
    /// What it may do.
    pub caps: Capabilities,
}

/// One cache (tenant) as this node hosts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// The cache id.
    pub id: String,
    /// This node's share of the cache, in bytes.
    pub memory_limit: u64,
    /// A disabled cache refuses every login.
    pub disabled: bool,
    /// Its credentials.
    pub credentials: Vec<Credential>,
}

impl CacheConfig {
    /// The primary credential, if the cache has any credentials.
    pub fn primary(&self) -> Option<&Credential> {
        self.credentials.iter().find(|c| c.primary)
    }
}

/// The whole caches file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CachesFile {
    /// The caches, in file order.
    pub caches: Vec<CacheConfig>,
}

/// A rule of the caches file that was broken. The file name is in
/// [`CachesError::Invalid`].
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    /// A cache has an empty id.
    #[error("cache #{index} has an empty id")]
    EmptyCacheId {
        /// Its position in the file, from 1.
        index: usize,
    },
    /// A cache id has whitespace or control characters.
    #[error("cache id {id:?} contains whitespace or control characters")]
    BadCacheId {
        /// The id.
        id: String,
    },
    /// Two caches share an id.
    #[error("cache id {id:?} appears more than once")]
    DuplicateCacheId {
        /// The id.
        id: String,
    },
    /// `memory_limit = 0`.
    #[error("cache {cache:?}: memory_limit must be greater than zero")]
    ZeroMemoryLimit {
        /// The cache id.
        cache: String,
    },
    /// A credential has an empty username.
    #[error("cache {cache:?}: credential #{index} has an empty username")]
    EmptyUsername {
        /// The cache id.
        cache: String,
        /// Its position in the cache, from 1.
        index: usize,
    },
    /// A username has whitespace or control characters, or is too long.
    #[error("cache {cache:?}: username {username:?} must be at most 250 bytes without whitespace or control characters")]
    BadUsername {
        /// The cache id.
        cache: String,
        /// The username.
        username: String,
    },
    /// A username is used twice, in the same cache or in two caches.
    #[error("username {username:?} is used by cache {first:?} and again by cache {second:?}; usernames must be unique across all caches")]
    DuplicateUsername {
        /// The username.
        username: String,
        /// The cache where it first appears.
        first: String,
        /// The cache where it appears again.
        second: String,
    },
    /// More than one credential of a cache is primary.
    #[error("cache {cache:?}: more than one primary credential ({usernames})")]
    MultiplePrimaries {
        /// The cache id.
        cache: String,
        /// The primaries, comma-separated.
        usernames: String,
    },
    /// A cache has credentials but none is primary (only possible for a
    /// [`CachesFile`] built in code; loading makes the first one primary).
    #[error("cache {cache:?}: no primary credential")]
    NoPrimary {
        /// The cache id.
        cache: String,
    },
    /// Both `password` and `password_hash`.
    #[error(
        "cache {cache:?}: credential {username:?} has both password and password_hash; keep one"
    )]
    PasswordAndHash {
        /// The cache id.
        cache: String,
        /// The username.
        username: String,
    },
    /// Neither `password` nor `password_hash`.
    #[error("cache {cache:?}: credential {username:?} has neither password nor password_hash")]
    NoPassword {
        /// The cache id.
        cache: String,
        /// The username.
        username: String,
    },
    /// `password = ""`.
    #[error("cache {cache:?}: credential {username:?} has an empty password")]
    EmptyPassword {
        /// The cache id.
        cache: String,
        /// The username.
        username: String,
    },
    /// A `password_hash` that cannot be verified.
    #[error("cache {cache:?}: credential {username:?}: {source}")]
    BadHash {
        /// The cache id.
        cache: String,
        /// The username.
        username: String,
        /// Why.
        #[source]
        source: AuthError,
    },
}

/// Loading, validating or saving the caches file failed.
#[derive(Debug, thiserror::Error)]
pub enum CachesError {
    /// The file could not be read or written.
    #[error("{action} caches file {path}: {source}")]
    Io {
        /// "read" / "write" / ….
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("caches file {file}: {source}")]
    Toml {
        /// The file.
        file: String,
        /// The parser's reason (with line and column).
        #[source]
        source: toml::de::Error,
    },
    /// The file breaks one of the rules.
    #[error("caches file {file}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// The rule broken.
        #[source]
        reason: Invalid,
    },
    /// Serializing for save failed.
    #[error("caches file {file}: could not serialize: {source}")]
    Serialize {
        /// The file.
        file: String,
        /// The serializer's reason.
        #[source]
        source: toml::ser::Error,
    },
}

// ---- the on-disk shape ----

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default, rename = "cache", skip_serializing_if = "Vec::is_empty")]
    caches: Vec<RawCache>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    id: String,
    memory_limit: Size,
    #[serde(default, skip_serializing_if = "is_false")]
    disabled: bool,
    #[serde(default, rename = "credential", skip_serializing_if = "Vec::is_empty")]
    credentials: Vec<RawCredential>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password_hash: Option<String>,
    #[serde(default)]
    primary: bool,
    #[serde(default = "yes")]
    write: bool,
    #[serde(default = "yes")]
    flush: bool,
    #[serde(default = "yes")]
    api: bool,
}

fn bad_chars(s: &str) -> bool {
    s.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl RawCredential {
    fn into_credential(self, cache: &str) -> Result<Credential, Invalid> {
        let who = || (cache.to_owned(), self.username.clone());
        let secret = match (self.password, self.password_hash) {
            (Some(_), Some(_)) => {
                let (cache, username) = who();
                return Err(Invalid::PasswordAndHash { cache, username });
            }
            (None, None) => {
                let (cache, username) = who();
                return Err(Invalid::NoPassword { cache, username });
            }
            (Some(p), None) if p.is_empty() => {
                let (cache, username) = who();
                return Err(Invalid::EmptyPassword { cache, username });
            }
            (Some(p), None) => Secret::Plain(p),
            (None, Some(h)) => Secret::from_hash(&h).map_err(|source| {
                let (cache, username) = who();
                Invalid::BadHash {
                    cache,
                    username,
                    source,
                }
            })?,
        };
        Ok(Credential {
            username: self.username,
            secret,
            primary: self.primary,
            caps: Capabilities {
                write: self.write,
                flush: self.flush,
                api: self.api,
            },
        })
    }

    fn from_credential(c: &Credential) -> Self {
        let (password, password_hash) = match &c.secret {
            Secret::Plain(p) => (Some(p.clone()), None),
            Secret::Hash(h) => (None, Some(h.as_str().to_owned())),
        };
        RawCredential {
            username: c.username.clone(),
            password,
            password_hash,
            primary: c.primary,
            write: c.caps.write,
            flush: c.caps.flush,
            api: c.caps.api,
        }
    }
}

impl CachesFile {
    /// Reads, parses and validates the caches file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CachesError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|source| CachesError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
        Self::parse_named(&text, &path.display().to_string())
    }

    /// Parses and validates caches TOML from a string.
    pub fn parse(text: &str) -> Result<Self, CachesError> {
        Self::parse_named(text, UNNAMED)
    }

    /// [`parse`](Self::parse), naming the source `file` in errors.
    pub fn parse_named(text: &str, file: &str) -> Result<Self, CachesError> {
        let invalid = |reason| CachesError::Invalid {
            file: file.to_owned(),
            reason,
        };
        let raw: RawFile = toml::from_str(text).map_err(|source| CachesError::Toml {
            file: file.to_owned(),
            source,
        })?;
        let mut caches = Vec::with_capacity(raw.caches.len());
        for rc in raw.caches {
            let mut credentials = Vec::with_capacity(rc.credentials.len());
            for cred in rc.credentials {
                credentials.push(cred.into_credential(&rc.id).map_err(invalid)?);
            }
            // None marked primary: the first credential is.
            if !credentials.iter().any(|c| c.primary) {
                if let Some(first) = credentials.first_mut() {
                    first.primary = true;
                }
            }
            caches.push(CacheConfig {
                id: rc.id,
                memory_limit: rc.memory_limit.bytes(),
                disabled: rc.disabled,
                credentials,
            });
        }
        let file_ = CachesFile { caches };
        file_.validate().map_err(invalid)?;
        Ok(file_)
    }

    /// Checks every rule in the [module docs](self) except those about the
    /// on-disk form (both/neither password, malformed hashes), which
    /// [`Secret`] makes unrepresentable.
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut ids: HashMap<&str, ()> = HashMap::new();
        let mut users: HashMap<&str, &str> = HashMap::new();
        for (i, cache) in self.caches.iter().enumerate() {
            let id = cache.id.as_str();
            if id.is_empty() {
                return Err(Invalid::EmptyCacheId { index: i + 1 });
            }
            if bad_chars(id) {
                return Err(Invalid::BadCacheId { id: id.to_owned() });
            }
            if ids.insert(id, ()).is_some() {
                return Err(Invalid::DuplicateCacheId { id: id.to_owned() });
            }
            if cache.memory_limit == 0 {
                return Err(Invalid::ZeroMemoryLimit {
                    cache: id.to_owned(),
                });
            }
            for (j, cred) in cache.credentials.iter().enumerate() {
                let name = cred.username.as_str();
                if name.is_empty() {
                    return Err(Invalid::EmptyUsername {
                        cache: id.to_owned(),
                        index: j + 1,
                    });
                }
                if name.len() > MAX_USERNAME_LEN || bad_chars(name) {
                    return Err(Invalid::BadUsername {
                        cache: id.to_owned(),
                        username: name.to_owned(),
                    });
                }
                if let Some(first) = users.insert(name, id) {
                    return Err(Invalid::DuplicateUsername {
                        username: name.to_owned(),
                        first: first.to_owned(),
                        second: id.to_owned(),
                    });
                }
                if matches!(&cred.secret, Secret::Plain(p) if p.is_empty()) {
                    return Err(Invalid::EmptyPassword {
                        cache: id.to_owned(),
                        username: name.to_owned(),
                    });
                }
            }
            let primaries: Vec<&str> = cache
                .credentials
                .iter()
                .filter(|c| c.primary)
                .map(|c| c.username.as_str())
                .collect();
            if primaries.len() > 1 {
                return Err(Invalid::MultiplePrimaries {
                    cache: id.to_owned(),
                    usernames: primaries.join(", "),
                });
            }
            if primaries.is_empty() && !cache.credentials.is_empty() {
                return Err(Invalid::NoPrimary {
                    cache: id.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The cache with this id.
    pub fn cache(&self, id: &str) -> Option<&CacheConfig> {
        self.caches.iter().find(|c| c.id == id)
    }

    /// How many credentials store a plain-text password, so start-up can
    /// warn about them (without naming them).
    pub fn plain_password_count(&self) -> usize {
        self.caches
            .iter()
            .flat_map(|c| &c.credentials)
            .filter(|c| c.secret.is_plain())
            .count()
    }

    /// The file as TOML, passwords and hashes exactly as loaded.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        let raw = RawFile {
            caches: self
                .caches
                .iter()
                .map(|c| RawCache {
                    id: c.id.clone(),
                    memory_limit: Size(c.memory_limit),
                    disabled: c.disabled,
                    credentials: c
                        .credentials
                        .iter()
                        .map(RawCredential::from_credential)
                        .collect(),
                })
                .collect(),
        };
        toml::to_string(&raw)
    }

    /// Validates, then writes the file atomically with mode 0600: a
    /// temporary file in the same directory is written and fsynced, renamed
    /// over `path`, and the directory is fsynced. Readers see the old file
    /// or the new one, never a mix. Comments in the old file are not kept.
    pub fn save_atomic(&self, path: impl AsRef<Path>) -> Result<(), CachesError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        self.validate().map_err(|reason| CachesError::Invalid {
            file: file.clone(),
            reason,
        })?;
        let body = self
            .to_toml()
            .map_err(|source| CachesError::Serialize { file, source })?;
        let text = format!(
            "# memgate caches file. Rewritten by memgate: comments are not kept.\n\n{body}"
        );
        write_atomic(path, text.as_bytes())
    }
}

fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), CachesError> {
    let io = |action: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| CachesError::Io {
            action,
            path: p,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| CachesError::Io {
        action: "write",
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp.{}.{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create temporary", &tmp))?;
        f.write_all(contents).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io("rename into place", path))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory of", path))
}

// ---- logins ----

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
    index: HashMap<Box<[u8]>, (usize, usize)>,
    /// Every (cache, credential) position, for decoy verification.
    all: Vec<(usize, usize)>,
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
                index.insert(cred.username.as_bytes().into(), (ci, ki));
                all.push((ci, ki));
            }
        }
        Ok(Directory { file, index, all })
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
        self.index.get(username).map(|&(ci, _)| ci)
    }

    /// Checks a login. Unknown users, wrong passwords and disabled caches
    /// all fail with the same [`LoginError::Failed`], and take about as
    /// long: for an unknown username the password is verified (and the
    /// result ignored) against a real credential chosen by a keyed hash of
    /// the username, so the time spent has the same distribution as for
    /// existing users, and repeats for the same username.
    pub fn login(&self, username: &[u8], password: &[u8]) -> Result<LoginOk, LoginError> {
        let ok = self.verify(username, password)?;
        if self.file.caches[ok.cache_index].disabled {
            return Err(LoginError::Failed);
        }
        Ok(ok)
    }

    /// [`Directory::login`] without the disabled check: only for the admin
    /// API, which tells a disabled cache's owner so they can enable it.
    pub fn verify(&self, username: &[u8], password: &[u8]) -> Result<LoginOk, LoginError> {
        let Some(&(ci, ki)) = self.index.get(username) else {
            self.decoy_verify(username, password);
            return Err(LoginError::Failed);
        };
        let cache = &self.file.caches[ci];
        let cred = &cache.credentials[ki];
        if !auth::verify(&cred.secret, password) {
            return Err(LoginError::Failed);
        }
        Ok(LoginOk {
            cache_id: cache.id.clone(),
            cache_index: ci,
            username: cred.username.clone(),
            primary: cred.primary,
            caps: cred.caps,
        })
    }

    fn decoy_verify(&self, username: &[u8], password: &[u8]) {
        static NOBODY: std::sync::OnceLock<Secret> = std::sync::OnceLock::new();
        let secret = if self.all.is_empty() {
            NOBODY.get_or_init(|| Secret::Plain("\0no credentials\0".to_owned()))
        } else {
            let d = auth::keyed_digest(username);
            let n = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
            let (ci, ki) = self.all[(n % self.all.len() as u64) as usize];
            &self.file.caches[ci].credentials[ki].secret
        };
        std::hint::black_box(auth::verify(secret, password));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const EXAMPLE: &str = r#"
[[cache]]
id = "1561"
memory_limit = "64MiB"   # this node's share of the cache
disabled = false

[[cache.credential]]
username = "15F38e"
password = "s3cret"
primary = true
write = true
flush = true
api = true

[[cache.credential]]
username = "readonly"
password = "ro-pass"
write = false
flush = false
api = false

[[cache]]
id = "77"
memory_limit = 1048576

[[cache.credential]]
username = "other"
password = "other-pass"
"#;

    fn err(text: &str) -> Invalid {
        match CachesFile::parse(text) {
            Err(CachesError::Invalid { reason, file }) => {
                assert_eq!(file, UNNAMED);
                reason
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn one(cred: &str) -> String {
        format!("[[cache]]\nid = \"c\"\nmemory_limit = \"1MiB\"\n[[cache.credential]]\n{cred}\n")
    }

    #[test]
    fn parses_the_example() {
        let f = CachesFile::parse(EXAMPLE).unwrap();
        assert_eq!(f.caches.len(), 2);
        let c = &f.caches[0];
        assert_eq!(
            (c.id.as_str(), c.memory_limit, c.disabled),
            ("1561", 64 << 20, false)
        );
        assert_eq!(c.credentials.len(), 2);
        let p = &c.credentials[0];
        assert_eq!(p.username, "15F38e");
        assert_eq!(p.secret, Secret::Plain("s3cret".into()));
        assert!(p.primary);
        assert_eq!(p.caps, Capabilities::ALL);
        let ro = &c.credentials[1];
        assert!(!ro.primary);
        assert_eq!(
            ro.caps,
            Capabilities {
                write: false,
                flush: false,
                api: false
            }
        );
        assert_eq!(c.primary().unwrap().username, "15F38e");
        assert_eq!(f.caches[1].memory_limit, 1 << 20);
        assert_eq!(f.plain_password_count(), 3);
        assert_eq!(f.cache("77").unwrap().id, "77");
        assert!(f.cache("nope").is_none());
    }

    #[test]
    fn defaults() {
        let f = CachesFile::parse(&one("username = \"u\"\npassword = \"p\"")).unwrap();
        let c = &f.caches[0];
        assert!(!c.disabled);
        let cred = &c.credentials[0];
        assert_eq!(cred.caps, Capabilities::ALL);
        // The only (first) credential becomes primary when none is marked.
        assert!(cred.primary);
        // A cache without credentials, and an empty file, are fine.
        let f = CachesFile::parse("[[cache]]\nid = \"x\"\nmemory_limit = 1\n").unwrap();
        assert!(f.caches[0].credentials.is_empty() && f.caches[0].primary().is_none());
        assert_eq!(CachesFile::parse("").unwrap(), CachesFile::default());
    }

    #[test]
    fn first_is_primary_when_none_marked_otherwise_the_marked_one() {
        let text = "[[cache]]\nid = \"c\"\nmemory_limit = 1\n\
            [[cache.credential]]\nusername = \"a\"\npassword = \"p\"\n\
            [[cache.credential]]\nusername = \"b\"\npassword = \"p\"\n";
        let f = CachesFile::parse(text).unwrap();
        assert_eq!(f.caches[0].primary().unwrap().username, "a");
        let f = CachesFile::parse(&format!("{text}primary = true\n")).unwrap();
        assert_eq!(f.caches[0].primary().unwrap().username, "b");
        assert!(!f.caches[0].credentials[0].primary);
    }

    #[test]
    fn hashed_passwords_load_and_bad_ones_fail() {
        let phc = auth::hash_password("pw").unwrap();
        let f = CachesFile::parse(&one(&format!(
            "username = \"u\"\npassword_hash = \"{phc}\""
        )))
        .unwrap();
        assert!(matches!(&f.caches[0].credentials[0].secret, Secret::Hash(h) if h.as_str() == phc));
        assert_eq!(f.plain_password_count(), 0);
        let e = err(&one("username = \"u\"\npassword_hash = \"$argon2id$nope\""));
        assert!(
            matches!(e, Invalid::BadHash { ref username, .. } if username == "u"),
            "{e}"
        );
    }

    #[test]
    fn every_validation_error() {
        let e = err("[[cache]]\nid = \"\"\nmemory_limit = 1\n");
        assert!(matches!(e, Invalid::EmptyCacheId { index: 1 }), "{e}");
        let e = err("[[cache]]\nid = \"a b\"\nmemory_limit = 1\n");
        assert!(matches!(e, Invalid::BadCacheId { .. }), "{e}");
        let e = err(
            "[[cache]]\nid = \"a\"\nmemory_limit = 1\n[[cache]]\nid = \"a\"\nmemory_limit = 1\n",
        );
        assert!(
            matches!(e, Invalid::DuplicateCacheId { ref id } if id == "a"),
            "{e}"
        );
        let e = err("[[cache]]\nid = \"a\"\nmemory_limit = \"0MiB\"\n");
        assert!(
            matches!(e, Invalid::ZeroMemoryLimit { ref cache } if cache == "a"),
            "{e}"
        );
        let e = err(&one("username = \"\"\npassword = \"p\""));
        assert!(matches!(e, Invalid::EmptyUsername { index: 1, .. }), "{e}");
        for bad in ["a b", "a\\tb", "a\\u0001", &"x".repeat(251)] {
            let e = err(&one(&format!("username = \"{bad}\"\npassword = \"p\"")));
            assert!(matches!(e, Invalid::BadUsername { .. }), "{bad}: {e}");
        }
        let e = err(&one(
            "username = \"u\"\npassword = \"p\"\npassword_hash = \"$argon2id$x\"",
        ));
        assert!(matches!(e, Invalid::PasswordAndHash { .. }), "{e}");
        let e = err(&one("username = \"u\""));
        assert!(matches!(e, Invalid::NoPassword { .. }), "{e}");
        let e = err(&one("username = \"u\"\npassword = \"\""));
        assert!(matches!(e, Invalid::EmptyPassword { .. }), "{e}");
        let two = "[[cache]]\nid = \"c\"\nmemory_limit = 1\n\
            [[cache.credential]]\nusername = \"a\"\npassword = \"p\"\nprimary = true\n\
            [[cache.credential]]\nusername = \"b\"\npassword = \"p\"\nprimary = true\n";
        let e = err(two);
        assert!(
            matches!(e, Invalid::MultiplePrimaries { ref usernames, .. } if usernames == "a, b"),
            "{e}"
        );
        // Duplicate username in the same cache, and across caches.
        let e = err(&two
            .replace("\"b\"", "\"a\"")
            .replace("primary = true\n", ""));
        assert!(matches!(e, Invalid::DuplicateUsername { .. }), "{e}");
        let e = err(&format!(
            "{}[[cache]]\nid = \"d\"\nmemory_limit = 1\n[[cache.credential]]\nusername = \"u\"\npassword = \"q\"\n",
            one("username = \"u\"\npassword = \"p\"")
        ));
        assert!(
            matches!(e, Invalid::DuplicateUsername { ref first, ref second, .. } if first == "c" && second == "d"),
            "{e}"
        );
        let mut f = CachesFile::parse(&one("username = \"u\"\npassword = \"p\"")).unwrap();
        f.caches[0].credentials[0].primary = false;
        assert!(matches!(f.validate(), Err(Invalid::NoPrimary { .. })));
    }

    #[test]
    fn toml_shape_errors() {
        for bad in [
            "[[cache]]\nmemory_limit = 1\n",                        // no id
            "[[cache]]\nid = \"a\"\n",                              // no memory_limit
            "[[cache]]\nid = \"a\"\nmemory_limit = \"64XB\"\n",     // bad size
            "[[cache]]\nid = \"a\"\nmemory_limit = 1\nlimit = 2\n", // unknown key
            "[[cache]]\nid = \"a\"\nmemory_limit = -1\n",
            "not toml at all",
        ] {
            assert!(
                matches!(CachesFile::parse(bad), Err(CachesError::Toml { .. })),
                "{bad}"
            );
        }
        let e = CachesFile::parse(&one("username = \"u\"\npasword = \"p\"")).unwrap_err();
        assert!(e.to_string().contains("pasword"), "{e}");
    }

    #[test]
    fn errors_name_the_file_and_never_the_password() {
        let dir = tempdir();
        let path = dir.join("caches.toml");
        fs::write(
            &path,
            one("username = \"u\"\npassword = \"topsecret\"\npassword_hash = \"x\""),
        )
        .unwrap();
        let e = CachesFile::load(&path).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("\"u\"") && e.contains("\"c\""),
            "{e}"
        );
        assert!(!e.contains("topsecret"), "{e}");
        let e = CachesFile::load(dir.join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
        // Debug output of a loaded file does not show passwords either.
        let f = CachesFile::parse(EXAMPLE).unwrap();
        let dbg = format!("{f:?}");
        assert!(!dbg.contains("s3cret") && !dbg.contains("ro-pass"), "{dbg}");
        fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "memgate-caches-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn save_atomic_round_trips_losslessly() {
        let phc = auth::hash_password("pw").unwrap();
        let text = format!(
            "{EXAMPLE}\n[[cache]]\nid = \"h\"\nmemory_limit = 1000\ndisabled = true\n\
             [[cache.credential]]\nusername = \"hashed\"\npassword_hash = \"{phc}\"\nflush = false\n"
        );
        let f = CachesFile::parse(&text).unwrap();
        let dir = tempdir();
        let path = dir.join("caches.toml");
        fs::write(&path, "old contents").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        f.save_atomic(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let back = CachesFile::load(&path).unwrap();
        assert_eq!(back, f);
        let saved = fs::read_to_string(&path).unwrap();
        assert!(saved.contains("password = \"s3cret\""), "{saved}");
        assert!(saved.contains(&phc), "{saved}");
        assert!(saved.contains("memory_limit = \"64MiB\""), "{saved}");
        // Saving again is byte-identical, and no temporary files remain.
        back.save_atomic(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), saved);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        // An invalid file is not written.
        let mut bad = back.clone();
        bad.caches[0].memory_limit = 0;
        assert!(matches!(
            bad.save_atomic(&path),
            Err(CachesError::Invalid { .. })
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), saved);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn login() {
        let phc = auth::hash_password("hashed-pw").unwrap();
        let text = format!(
            "{EXAMPLE}\n[[cache]]\nid = \"off\"\nmemory_limit = 1\ndisabled = true\n\
             [[cache.credential]]\nusername = \"disabled-user\"\npassword = \"pw\"\n\
             [[cache]]\nid = \"h\"\nmemory_limit = 1\n\
             [[cache.credential]]\nusername = \"hashed\"\npassword_hash = \"{phc}\"\n"
        );
        let d = Directory::new(CachesFile::parse(&text).unwrap()).unwrap();
        let ok = d.login(b"15F38e", b"s3cret").unwrap();
        assert_eq!(
            ok,
            LoginOk {
                cache_id: "1561".into(),
                cache_index: 0,
                username: "15F38e".into(),
                primary: true,
                caps: Capabilities::ALL
            }
        );
        let ro = d.login(b"readonly", b"ro-pass").unwrap();
        assert_eq!((ro.cache_id.as_str(), ro.primary), ("1561", false));
        assert_eq!(
            ro.caps,
            Capabilities {
                write: false,
                flush: false,
                api: false
            }
        );
        assert_eq!(d.login(b"other", b"other-pass").unwrap().cache_index, 1);
        let h = d.login(b"hashed", b"hashed-pw").unwrap();
        assert_eq!(h.cache_id, "h");

        // Every failure is the same error.
        assert_eq!(d.login(b"15F38e", b"wrong"), Err(LoginError::Failed));
        assert_eq!(d.login(b"15F38e", b"s3cret "), Err(LoginError::Failed));
        assert_eq!(d.login(b"15f38e", b"s3cret"), Err(LoginError::Failed)); // case-sensitive
        assert_eq!(d.login(b"nobody", b"s3cret"), Err(LoginError::Failed));
        assert_eq!(d.login(b"", b""), Err(LoginError::Failed));
        assert_eq!(d.login(b"disabled-user", b"pw"), Err(LoginError::Failed));
        assert_eq!(d.login(b"hashed", b"nope"), Err(LoginError::Failed));
        assert_eq!(d.login(b"\xff\xfe", b"x"), Err(LoginError::Failed));

        assert_eq!(d.cache_of_username(b"readonly"), Some(0));
        assert_eq!(d.cache_of_username(b"nobody"), None);
        assert_eq!(d.caches().len(), 4);
        // An empty directory refuses everyone.
        let empty = Directory::new(CachesFile::default()).unwrap();
        assert_eq!(empty.login(b"u", b"p"), Err(LoginError::Failed));
    }

    #[test]
    fn unknown_user_costs_a_verification_too() {
        let phc = auth::hash_password("pw").unwrap();
        let d = Directory::new(
            CachesFile::parse(&one(&format!(
                "username = \"u\"\npassword_hash = \"{phc}\""
            )))
            .unwrap(),
        )
        .unwrap();
        let time = |u: &[u8]| {
            let t = std::time::Instant::now();
            assert_eq!(d.login(u, b"guess"), Err(LoginError::Failed));
            t.elapsed()
        };
        let known = time(b"u");
        let unknown = time(b"nobody");
        // An argon2 verification takes milliseconds, a bare lookup
        // microseconds: the unknown user must have paid for one too.
        assert!(
            unknown * 3 > known,
            "unknown {unknown:?} vs known {known:?}"
        );
    }

    #[test]
    fn directory_refuses_an_invalid_file() {
        let mut f = CachesFile::parse(EXAMPLE).unwrap();
        f.caches[1].credentials[0].username = "15F38e".into();
        assert!(matches!(
            Directory::new(f),
            Err(Invalid::DuplicateUsername { .. })
        ));
    }
}
