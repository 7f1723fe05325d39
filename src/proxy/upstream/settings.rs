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
    /// Meta, after MemCachier's ASCII login: memgate nodes (the default).
    #[default]
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
            "meta" => Ok(UpstreamProtocol::Meta),
            "meta-memcached" => Ok(UpstreamProtocol::MetaMemcached),
            "binary" => Ok(UpstreamProtocol::Binary),
            _ => Err(format!(
                "{name:?} is not one of meta, meta-memcached, binary"
            )),
        }
    }
}

impl UpstreamProtocol {
    /// Whether the nodes keep memgate's tombstones (`node::tombstones`), so
    /// that the warm-up may copy moved items to their new node.
    pub fn keeps_tombstones(self) -> bool {
        self == UpstreamProtocol::Meta
    }

    /// The ASCII login a meta upstream takes; `None` for binary.
    pub fn login_form(self) -> Option<LoginForm> {
        match self {
            UpstreamProtocol::Meta => Some(LoginForm::MemCachier),
            UpstreamProtocol::MetaMemcached => Some(LoginForm::Memcached),
            UpstreamProtocol::Binary => None,
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
