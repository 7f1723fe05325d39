//! `memgate node` flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::admin_token;
use clap::{Args, Subcommand};
use memgate::config::ConfigError;
use memgate::node::config::defaults;
use memgate::node::NodeConfig;
use memgate::units::{parse_duration_arg, parse_size_arg};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: Option<NodeCommand>,

    /// Plain listener [default: 127.0.0.1:11211]; "none" turns it off.
    #[arg(long, env = "MEMGATE_NODE_LISTEN")]
    pub listen: Option<String>,
    /// TLS listener; defaults to 0.0.0.0:11219 when --cert is given.
    #[arg(long, env = "MEMGATE_NODE_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for the TLS listener.
    #[arg(long, env = "MEMGATE_NODE_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key for the TLS listener.
    #[arg(long, env = "MEMGATE_NODE_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The caches file (tenants and credentials, TOML).
    #[arg(long, env = "MEMGATE_NODE_CACHES")]
    pub caches: Option<PathBuf>,
    /// Cap on the sum of every cache's memory limit [default: 64MiB].
    #[arg(long, env = "MEMGATE_NODE_MEMORY_LIMIT", value_parser = parse_size_arg)]
    pub memory_limit: Option<u64>,
    /// Largest key + value accepted [default: 1MiB].
    #[arg(long, env = "MEMGATE_NODE_MAX_ITEM_SIZE", value_parser = parse_size_arg)]
    pub max_item_size: Option<u64>,
    /// Connections that have not logged in by then are closed [default: 5s].
    #[arg(long, env = "MEMGATE_NODE_AUTH_TIMEOUT", value_parser = parse_duration_arg)]
    pub auth_timeout: Option<Duration>,
    /// Beyond this many open connections, new ones are refused [default: 4096].
    #[arg(long, env = "MEMGATE_NODE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Threads that serve connections, each with its share of them
    /// [default: one per core, at least 4, as memcached's -t].
    #[arg(long, env = "MEMGATE_NODE_THREADS")]
    pub threads: Option<usize>,
    /// Prometheus /metrics listener (off by default).
    #[arg(long, env = "MEMGATE_NODE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Testing only: one implicit cache, no login. Refused unless every listener is loopback.
    #[arg(long, env = "MEMGATE_NODE_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Admin HTTP API for `memgate analytics` (off by default; needs
    /// --admin-token, --admin-ca, or both).
    #[arg(long, env = "MEMGATE_NODE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token the admin API requires (at least 16 characters).
    #[arg(long, env = "MEMGATE_NODE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Serve the admin API over TLS (with --cert and --key) and require a
    /// client certificate that chains to this CA (PEM): mutual TLS.
    #[arg(long, env = "MEMGATE_NODE_ADMIN_CA", requires = "cert")]
    pub admin_ca: Option<PathBuf>,
    /// Each cache's what-if tracker (its hit rate predicted at other
    /// sizes); `off` spends nothing on it, not even a hash per key.
    #[arg(long, env = "MEMGATE_NODE_WHAT_IF", value_enum, default_value = "on")]
    pub what_if: OnOff,
}

/// A switch such as `--what-if on|off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Read a password on standard input and print its argon2id PHC hash.
    HashPassword,
}

impl NodeArgs {
    /// Validate the flags and load the TLS material.
    pub fn into_config(self) -> Result<NodeConfig, ConfigError> {
        if self.admin_ca.is_some() && self.admin_listen.is_none() {
            return Err(ConfigError::Missing {
                what: "--admin-listen for --admin-ca",
            });
        }
        let listen = match self.listen.as_deref() {
            None => Some(defaults::LISTEN),
            Some("none") => None,
            Some(addr) => Some(addr.parse().map_err(|_| ConfigError::Invalid {
                what: "--listen",
                value: addr.to_string(),
                expected: "an address such as 127.0.0.1:11211, or none",
            })?),
        };
        let tls_listen = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let addr = self.tls_listen.unwrap_or(defaults::TLS_LISTEN);
                let config = memgate::tls::server_config_from_files(cert, key)
                    .map_err(|e| ConfigError::Tls(e.to_string()))?;
                Some((addr, config))
            }
            _ if self.tls_listen.is_some() => {
                return Err(ConfigError::Invalid {
                    what: "--tls-listen",
                    value: self.tls_listen.map(|a| a.to_string()).unwrap_or_default(),
                    expected: "--cert and --key as well",
                })
            }
            _ => None,
        };
        let max_connections = self.max_connections.unwrap_or(defaults::MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(ConfigError::Invalid {
                what: "--max-connections",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        let threads = self.threads.unwrap_or_else(defaults::threads);
        if !(1..=defaults::MAX_THREADS).contains(&threads) {
            return Err(ConfigError::Invalid {
                what: "--threads",
                value: threads.to_string(),
                expected: "1 to 1024",
            });
        }
        let max_item_size = self.max_item_size.map_or(defaults::MAX_ITEM_SIZE, |size| {
            usize::try_from(size).unwrap_or(usize::MAX)
        });
        if !(2..=memgate::node::store::MAX_VALUE_LEN).contains(&max_item_size) {
            return Err(ConfigError::Invalid {
                what: "--max-item-size",
                value: max_item_size.to_string(),
                expected: "a size from 2 bytes to 16MiB - 1 (a value's length takes 3 bytes)",
            });
        }
        let admin = match self.admin_listen {
            Some(listen) => {
                let tls = match (&self.admin_ca, &self.cert, &self.key) {
                    (Some(ca), Some(cert), Some(key)) => {
                        let tls = || -> Result<_, memgate::tls::TlsError> {
                            memgate::tls::server_config(
                                memgate::tls::load_certs(cert)?,
                                memgate::tls::load_key(key)?,
                                Some(memgate::tls::load_roots(ca)?),
                            )
                        };
                        Some(tls().map_err(|e| ConfigError::Tls(e.to_string()))?)
                    }
                    _ => None,
                };
                Some(memgate::node::admin::AdminConfig {
                    listen,
                    token: admin_token(self.admin_token, tls.is_none())?,
                    tls,
                })
            }
            None => None,
        };
        let mut config = NodeConfig::new(self.caches);
        config.admin = admin;
        config.listen = listen;
        config.tls_listen = tls_listen;
        if let Some(limit) = self.memory_limit {
            config.memory_limit = limit;
        }
        config.max_item_size = max_item_size;
        if let Some(timeout) = self.auth_timeout {
            config.auth_timeout = timeout;
        }
        config.max_connections = max_connections;
        config.metrics_listen = self.metrics_listen;
        config.no_auth = self.insecure_no_auth;
        config.what_if = self.what_if == OnOff::On;
        config.threads = threads;
        Ok(config)
    }
}
