//! What a run is asked to do: [`BenchConfig`] and its checks.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::check::{CheckOptions, MAX_MULTIGET};
use super::keys::KeyPattern;
use super::BenchError;

/// Which dialect to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Text,
    Binary,
    /// memcached's meta commands (`mg`, `ms`, `md`, `mn`), each request
    /// carrying an opaque (`O`) that its reply must echo.
    Meta,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Text => "text",
            Protocol::Binary => "binary",
            Protocol::Meta => "meta",
        }
    }
}

/// Credentials: SASL PLAIN over binary, MemCachier's ASCII auth over text.
#[derive(Clone)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// TLS to the server, verified against a private CA.
#[derive(Clone, Debug)]
pub struct TlsTarget {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: rustls_pki_types::ServerName<'static>,
}

/// When the measurement ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    After(Duration),
    /// This many requests in total, shared between the connections.
    Requests(u64),
}

/// Everything a run needs. [`BenchConfig::new`] gives memtier-like defaults.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// host:port.
    pub server: String,
    pub protocol: Protocol,
    pub login: Option<Login>,
    pub tls: Option<TlsTarget>,
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// SET:GET, e.g. (1, 10).
    pub ratio: (u32, u32),
    pub key_space: u64,
    pub key_pattern: KeyPattern,
    /// Value sizes, inclusive; each key's size is fixed.
    pub value_size: (usize, usize),
    pub stop: Stop,
    /// Offered load in ops/s over all connections; `None` is closed loop.
    pub rate: Option<f64>,
    /// A reply later than this counts as an error and the connection is reopened.
    pub timeout: Duration,
    pub prefill: bool,
    /// Check that every hit carries the key's deterministic value.
    pub verify: bool,
    /// Print a progress line on stderr once a second.
    pub progress: bool,
    /// Connection churn: each request on a connection of its own (connect,
    /// TLS and login as configured, one request, close); `connections` is
    /// then the number of concurrent workers.
    pub churn: bool,
    /// A consistency check instead of a benchmark (`super::check`).
    pub check: Option<CheckOptions>,
}

/// Connections beyond this cost more memory (a histogram each) than they are worth.
pub const MAX_CONNECTIONS: usize = 1000;
/// Longest pipeline accepted.
pub const MAX_PIPELINE: usize = 10_000;
/// Largest value: the item limit minus room for the key.
pub const MAX_VALUE_SIZE: usize = (1 << 20) - 64;

impl BenchConfig {
    pub fn new(server: impl Into<String>) -> BenchConfig {
        BenchConfig {
            server: server.into(),
            protocol: Protocol::Text,
            login: None,
            tls: None,
            connections: 4,
            pipeline: 1,
            ratio: (1, 10),
            key_space: 10_000,
            key_pattern: KeyPattern::Uniform,
            value_size: (32, 32),
            stop: Stop::After(Duration::from_secs(10)),
            rate: None,
            timeout: Duration::from_secs(1),
            prefill: false,
            verify: false,
            progress: false,
            churn: false,
            check: None,
        }
    }

    /// The checks the command line also makes, for library callers.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |what: &str| Err(BenchError::Config(what.to_string()));
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return bad("connections must be 1 to 1000");
        }
        if self.pipeline == 0 || self.pipeline > MAX_PIPELINE {
            return bad("pipeline must be 1 to 10000");
        }
        if self.churn && self.pipeline != 1 {
            return bad("churn sends one request per connection: pipeline must be 1");
        }
        if self.ratio.0 == 0 && self.ratio.1 == 0 {
            return bad("ratio must not be 0:0");
        }
        if self.key_space == 0 {
            return bad("key space must be at least 1");
        }
        if self.value_size.0 > self.value_size.1 || self.value_size.1 > MAX_VALUE_SIZE {
            return bad("value size must be MIN-MAX with MIN <= MAX <= 1MiB - 64");
        }
        if let KeyPattern::Zipf { exponent } = self.key_pattern {
            if !(exponent.is_finite() && exponent > 0.0) {
                return bad("zipf exponent must be positive");
            }
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return bad("rate must be a positive number of ops/s");
            }
        }
        match self.stop {
            Stop::After(d) if d.is_zero() => return bad("duration must be positive"),
            Stop::Requests(0) => return bad("requests must be at least 1"),
            _ => {}
        }
        if self.timeout.is_zero() {
            return bad("timeout must be positive");
        }
        if let Some(check) = &self.check {
            if self.churn || self.rate.is_some() {
                return bad("check runs closed loop on long-lived connections: no churn or rate");
            }
            if check.multiget == 0 || check.multiget > MAX_MULTIGET {
                return bad("check multiget must be 1 to 100");
            }
            if self.ratio.0 == 0 {
                return bad("check needs writes: the SET part of the ratio must not be 0");
            }
        }
        if let Some(login) = &self.login {
            if login.username.is_empty()
                || login.username.len() > crate::protocol::MAX_KEY_LEN
                || login
                    .username
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return bad("username must be 1 to 250 characters without spaces");
            }
        }
        Ok(())
    }
}
