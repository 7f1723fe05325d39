//! `memgate node` flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::admin_token;
use clap::{Args, Subcommand};
use memgate::config::ConfigError;
use memgate::node::NodeConfig;
use memgate::units::{parse_duration_arg, parse_size_arg};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: Option<NodeCommand>,

    /// Plain listener; "none" turns it off.
    #[arg(long, env = "MEMGATE_NODE_LISTEN", default_value = "127.0.0.1:11211")]
    pub listen: String,
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
    /// Cap on the sum of every cache's memory limit.
    #[arg(long, env = "MEMGATE_NODE_MEMORY_LIMIT", default_value = "64MiB", value_parser = parse_size_arg)]
    pub memory_limit: u64,
    /// Largest key + value accepted.
    #[arg(long, env = "MEMGATE_NODE_MAX_ITEM_SIZE", default_value = "1MiB", value_parser = parse_size_arg)]
    pub max_item_size: u64,
    /// Connections that have not logged in by then are closed.
    #[arg(long, env = "MEMGATE_NODE_AUTH_TIMEOUT", default_value = "5s", value_parser = parse_duration_arg)]
    pub auth_timeout: Duration,
    /// Beyond this many open connections, new ones are refused.
    #[arg(long, env = "MEMGATE_NODE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
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
        let listen = match self.listen.as_str() {
            "none" => None,
            addr => Some(addr.parse().map_err(|_| ConfigError::Invalid {
                what: "--listen",
                value: addr.to_string(),
                expected: "an address such as 127.0.0.1:11211, or none",
            })?),
        };
        let tls_listen = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let addr = self
                    .tls_listen
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 11219)));
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
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid {
                what: "--max-connections",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        let max_item_size = usize::try_from(self.max_item_size).unwrap_or(usize::MAX);
        if max_item_size < 2 {
            return Err(ConfigError::Invalid {
                what: "--max-item-size",
                value: self.max_item_size.to_string(),
                expected: "a size of at least 2 bytes",
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
        Ok(NodeConfig {
            admin,
            listen,
            tls_listen,
            caches_path: self.caches,
            memory_limit: self.memory_limit,
            max_item_size,
            auth_timeout: self.auth_timeout,
            max_connections: self.max_connections,
            metrics_listen: self.metrics_listen,
            no_auth: self.insecure_no_auth,
            what_if: self.what_if == OnOff::On,
        })
    }
}
