//! The JSON bodies of a node's admin API: what a node serves and what
//! `memgate analytics` reads and sends, so that neither role imports the
//! other's code.

use serde::{Deserialize, Serialize};

/// A credential as the admin API shows it: no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialView {
    pub username: String,
    pub primary: bool,
    pub write: bool,
    pub flush: bool,
    pub api: bool,
}

/// One cache in `GET /admin/caches`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheView {
    pub id: String,
    pub memory_limit: u64,
    pub disabled: bool,
    /// Unix seconds of the last login or command here.
    #[serde(default)]
    pub last_active: u64,
    pub credentials: Vec<CredentialView>,
}

/// `GET /admin/caches`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachesView {
    pub version: u64,
    pub caches: Vec<CacheView>,
}

/// One credential in the body of `PUT …/credentials`. Its Debug output
/// hides the password and hash.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialUpdate {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub primary: bool,
    pub write: bool,
    pub flush: bool,
    pub api: bool,
}

impl std::fmt::Debug for CredentialUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialUpdate")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("primary", &self.primary)
            .field("write", &self.write)
            .field("flush", &self.flush)
            .field("api", &self.api)
            .finish()
    }
}

impl std::fmt::Debug for CredentialsBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsBody")
            .field("credentials", &self.credentials.len())
            .finish()
    }
}

/// The body of `PUT /admin/caches/{id}/credentials`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsBody {
    pub credentials: Vec<CredentialUpdate>,
}

/// The body of `PUT /admin/caches/{id}/disabled`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisabledBody {
    pub disabled: bool,
}

/// The body of `POST /admin/login`.
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

/// A successful `POST /admin/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginView {
    pub cache_id: String,
    pub username: String,
    pub primary: bool,
    pub write: bool,
    pub flush: bool,
    pub api: bool,
    /// The cache is disabled (memcached logins fail; the owner may enable it).
    #[serde(default)]
    pub disabled: bool,
}

/// `GET /admin/caches/{id}/hotkeys`: a cache's heaviest keys on one node
/// over the last 5 to 10 seconds (`node::hotkeys`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotKeysView {
    /// How `key` is shown: [`KEYS_HASHED`] or [`KEYS_PLAIN`].
    pub keys: String,
    /// Unix seconds when the node started tracking the cache (at the first
    /// question about it; the first answer is empty).
    pub since: u64,
    /// Unix milliseconds: the window is `start_ms..end_ms`.
    pub start_ms: u64,
    pub end_ms: u64,
    /// The probability that a key is sampled now; counts are scaled up.
    pub sample_rate: f64,
    /// Estimated operations and bytes in the window, all keys.
    pub ops: u64,
    pub bytes: u64,
    /// Heaviest first; `count` is operations.
    pub by_ops: Vec<HotKeyView>,
    /// Heaviest first; `count` is bytes read and written.
    pub by_bytes: Vec<HotKeyView>,
}

/// Keys as a keyed hash (16 hex digits) under a secret the node makes at
/// start-up: the operator's view, which cannot be reversed by guessing.
pub const KEYS_HASHED: &str = "hashed";
/// Keys as [`escape_key`] writes them: the cache owner's view.
pub const KEYS_PLAIN: &str = "plain";

/// One key of a [`HotKeysView`]. Its Debug output hides the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotKeyView {
    pub key: String,
    /// Estimated operations or bytes in the window.
    pub count: u64,
    /// The key may have had up to this much more (beyond sampling noise).
    pub error: u64,
}

impl std::fmt::Debug for HotKeyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotKeyView")
            .field("key", &"<redacted>")
            .field("count", &self.count)
            .field("error", &self.error)
            .finish()
    }
}

/// A key (any bytes) as text: printable ASCII as it is, a backslash as
/// `\\`, any other byte as `\xNN`, so two keys never read the same.
pub fn escape_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x21..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_escaped_one_to_one() {
        assert_eq!(escape_key(b"user:42"), "user:42");
        assert_eq!(escape_key(b"a b\x00\xff\\x00"), "a\\x20b\\x00\\xff\\\\x00");
        assert_eq!(escape_key("é".as_bytes()), "\\xc3\\xa9");
        let v = HotKeyView {
            key: "secret-key".into(),
            count: 1,
            error: 0,
        };
        assert!(!format!("{v:?}").contains("secret"));
    }
}
