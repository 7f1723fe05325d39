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
