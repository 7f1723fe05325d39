//! The caches file: its on-disk TOML shape, validation and atomic
//! persistence.
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
//! Sizes are parsed by [`crate::units::parse_size`]. Unknown keys are
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
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::auth::{AuthError, Secret};
use crate::units::Size;

/// The longest username: a memcached key, as ASCII auth uses it as one.
pub const MAX_USERNAME_LEN: usize = 250;

/// The name errors use for a file parsed from a string.
pub(super) const UNNAMED: &str = "<caches TOML>";

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
