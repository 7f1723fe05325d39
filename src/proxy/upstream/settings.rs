//! Where a node is and how every connection to it logs in.

use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::TlsConnector;

use crate::protocol::meta::client::LoginForm;

/// Where and how to reach one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The node's ring identity, used in logs and metric labels.
    pub name: String,
    /// host:port to connect to.
    pub addr: String,
    /// The name its certificate must carry.
    pub server_name: rustls_pki_types::ServerName<'static>,
}

/// What the proxy speaks to its nodes (`--upstream-protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamProtocol {
    /// One of the three below, found at each connection's login
    /// (`upstream::detect`): the default.
    #[default]
    Auto,
    /// Meta, after MemCachier's ASCII login: memgate nodes.
    Meta,
    /// Meta, after memcached's `-Y` ASCII login: `memcached -Y <authfile> -Z`.
    MetaMemcached,
    /// Binary, after SASL PLAIN: `memcached -S -Z`, which has no text
    /// protocol. Meta flags binary cannot carry are refused.
    Binary,
}

impl std::str::FromStr for UpstreamProtocol {
    type Err = String;

    /// The names `--upstream-protocol` and the config file take.
    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "auto" => Ok(UpstreamProtocol::Auto),
            "meta" => Ok(UpstreamProtocol::Meta),
            "meta-memcached" => Ok(UpstreamProtocol::MetaMemcached),
            "binary" => Ok(UpstreamProtocol::Binary),
            _ => Err(format!(
                "{name:?} is not one of auto, meta, meta-memcached, binary"
            )),
        }
    }
}

impl UpstreamProtocol {
    /// The ASCII login a meta upstream takes; `None` for binary, and for
    /// auto, whose logins `upstream::login` makes.
    pub fn login_form(self) -> Option<LoginForm> {
        match self {
            UpstreamProtocol::Meta => Some(LoginForm::MemCachier),
            UpstreamProtocol::MetaMemcached => Some(LoginForm::Memcached),
            UpstreamProtocol::Binary | UpstreamProtocol::Auto => None,
        }
    }

    /// Its name, as `--upstream-protocol` and the metric label spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Auto => "auto",
            UpstreamProtocol::Meta => "meta",
            UpstreamProtocol::MetaMemcached => "meta-memcached",
            UpstreamProtocol::Binary => "binary",
        }
    }

    /// The kind of node that speaks it, for the log.
    pub fn speaker(self) -> &'static str {
        match self {
            UpstreamProtocol::Auto => "not known yet",
            UpstreamProtocol::Meta => "a memgate node (meta)",
            UpstreamProtocol::MetaMemcached => "memcached -Y (meta, with its ASCII login)",
            UpstreamProtocol::Binary => "memcached -S (binary, SASL)",
        }
    }
}

/// What every upstream connection shares.
#[derive(Clone)]
pub struct Settings {
    pub tls: TlsConnector,
    pub protocol: UpstreamProtocol,
    pub username: String,
    pub password: String,
    /// A connect (TCP, TLS and login) that takes longer than this fails.
    /// It may exceed the request timeout: requests stop waiting for it at
    /// their own deadline, while it goes on in the background.
    pub connect_timeout: Duration,
    /// How long a client request may take, for error messages.
    pub request_timeout: Duration,
    /// An idle connection is pinged this often, so that a NAT or load
    /// balancer between here and the node never forgets it, and a dead one
    /// is found and replaced before a request needs it.
    pub keepalive: Duration,
    /// See `ProxyConfig::tls_fingerprint`.
    pub tls_fingerprint: Option<u64>,
}

impl Settings {
    /// Whether connections made with `other` would log in the same way, so
    /// that a reload may keep the ones made with these.
    pub fn same_login(&self, other: &Settings) -> bool {
        self.username == other.username
            && self.password == other.password
            && self.protocol == other.protocol
            && match (self.tls_fingerprint, other.tls_fingerprint) {
                (Some(a), Some(b)) => a == b,
                _ => Arc::ptr_eq(self.tls.config(), other.tls.config()),
            }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("protocol", &self.protocol)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}
