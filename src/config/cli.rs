//! Command-line flags (each also read from `MEMGATE_<ROLE>_<FLAG>`), turned
//! into validated, typed configuration before anything is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::ConfigError;
use crate::node::NodeConfig;
use crate::units::{parse_duration_arg, parse_size_arg};

#[derive(Debug, Parser)]
#[command(
    name = "memgate",
    version,
    about = "Authenticated TLS memcached: sidecar, storage node, analytics"
)]
pub struct Cli {
    #[command(subcommand)]
    pub role: Role,
}

#[derive(Debug, Subcommand)]
pub enum Role {
    /// The multi-tenant, authenticated storage node.
    Node(NodeArgs),
    /// The sidecar: plain memcached on loopback, verified TLS + SASL to the nodes.
    Proxy(ProxyArgs),
    /// Print which node each key maps to (the proxy's ketama ring).
    Route(RouteArgs),
    /// Create the private PKI: a root CA, node and client certificates.
    Certs(CertsArgs),
    /// Run a whole local cluster (TLS + SASL nodes and the sidecar) in one process.
    Up(UpArgs),
    /// Load generator in the style of memtier_benchmark.
    Bench(BenchArgs),
    /// The cache owner's HTTP API and dashboard (stats, history, flush, credentials) across the nodes.
    Analytics(AnalyticsArgs),
}

#[derive(Debug, Args)]
pub struct AnalyticsArgs {
    /// Comma-separated node admin endpoints: host:port, or name=host:port
    /// (the name keys the stats, e.g. the node's memcached address).
    #[arg(long, env = "MEMGATE_ANALYTICS_NODES")]
    pub nodes: String,
    /// The nodes' admin token (optional with --client-cert).
    #[arg(long, env = "MEMGATE_ANALYTICS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Reach the admin endpoints over TLS, verified against this CA (PEM).
    #[arg(long, env = "MEMGATE_ANALYTICS_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for the nodes' mutual TLS.
    #[arg(long, env = "MEMGATE_ANALYTICS_CLIENT_CERT", requires_all = ["client_key", "ca"])]
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for the nodes' mutual TLS.
    #[arg(long, env = "MEMGATE_ANALYTICS_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Disable a cache with no logins and no commands on any node for this
    /// long (e.g. 30d); the API and the dashboard enable it again.
    #[arg(long, env = "MEMGATE_ANALYTICS_DISABLE_AFTER", value_parser = parse_duration_arg)]
    pub disable_after: Option<Duration>,
    /// Where the API listens.
    #[arg(
        long,
        env = "MEMGATE_ANALYTICS_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// SQLite database for the history and for changes not yet applied.
    #[arg(long, env = "MEMGATE_ANALYTICS_DB", default_value = "analytics.sqlite")]
    pub db: PathBuf,
    /// How often every cache's stats are sampled into the history.
    #[arg(long, env = "MEMGATE_ANALYTICS_SAMPLE_INTERVAL", default_value = "30m", value_parser = parse_duration_arg)]
    pub sample_interval: Duration,
    /// How long history is kept.
    #[arg(long, env = "MEMGATE_ANALYTICS_RETENTION", default_value = "30d", value_parser = parse_duration_arg)]
    pub retention: Duration,
    /// Prometheus /metrics listener (off by default).
    #[arg(long, env = "MEMGATE_ANALYTICS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl AnalyticsArgs {
    pub fn into_config(self) -> Result<crate::analytics::AnalyticsConfig, ConfigError> {
        let nodes =
            crate::analytics::parse_nodes(&self.nodes).map_err(|value| ConfigError::Invalid {
                what: "--nodes",
                value,
                expected: "comma-separated host:port or name=host:port entries",
            })?;
        let admin_token = admin_token(self.admin_token, self.client_cert.is_none())?;
        let tls = match &self.ca {
            Some(ca) => {
                let client = self.client_cert.as_deref().zip(self.client_key.as_deref());
                Some(
                    crate::tls::client_config_from_files(ca, client)
                        .map_err(|e| ConfigError::Tls(e.to_string()))?,
                )
            }
            None => None,
        };
        if self.disable_after.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::Invalid {
                what: "--disable-after",
                value: "0".into(),
                expected: "a positive duration such as 30d",
            });
        }
        if self.sample_interval.is_zero() {
            return Err(ConfigError::Invalid {
                what: "--sample-interval",
                value: "0".into(),
                expected: "a positive duration such as 30m",
            });
        }
        if self.retention.is_zero() {
            return Err(ConfigError::Invalid {
                what: "--retention",
                value: "0".into(),
                expected: "a positive duration such as 30d",
            });
        }
        Ok(crate::analytics::AnalyticsConfig {
            nodes,
            admin_token,
            tls,
            disable_after: self.disable_after,
            listen: self.listen,
            db: Some(self.db),
            sample_interval: self.sample_interval,
            retention: self.retention,
            metrics_listen: self.metrics_listen,
        })
    }
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory for the CA and certificates.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// A node certificate: NAME (a DNS name or IP), or NAME=SAN,SAN,...; repeatable.
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// A client certificate for mutual TLS; repeatable.
    #[arg(long = "client")]
    pub clients: Vec<String>,
    /// Replace an existing CA (every certificate it issued stops verifying).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// How many nodes to run.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Where the sidecar listens (loopback only).
    #[arg(long, default_value = "127.0.0.1:11211")]
    pub listen: SocketAddr,
    /// Metrics and health endpoints; "none" turns them off.
    #[arg(long, default_value = "127.0.0.1:9151")]
    pub metrics_listen: String,
    /// Where the PKI, caches file and credentials live (reused across runs).
    #[arg(long, default_value = ".memgate")]
    pub dir: PathBuf,
}

impl UpArgs {
    pub fn into_config(self) -> Result<crate::cluster::UpConfig, ConfigError> {
        if !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                what: "--listen",
                value: self.listen.to_string(),
                expected: "a loopback address",
            });
        }
        let metrics_listen = match self.metrics_listen.as_str() {
            "none" => None,
            addr => Some(addr.parse().map_err(|_| ConfigError::Invalid {
                what: "--metrics-listen",
                value: addr.to_string(),
                expected: "an address such as 127.0.0.1:9151, or none",
            })?),
        };
        if self.nodes == 0 || self.nodes > 64 {
            return Err(ConfigError::Invalid {
                what: "--nodes",
                value: self.nodes.to_string(),
                expected: "1 to 64",
            });
        }
        Ok(crate::cluster::UpConfig {
            nodes: self.nodes,
            listen: self.listen,
            metrics_listen,
            dir: self.dir,
        })
    }
}

#[derive(Debug, Args)]
pub struct RouteArgs {
    /// Comma-separated nodes, as for `memgate proxy --servers`
    /// [default: $MEMCACHIER_SERVERS, else $MEMCACHE_SERVERS].
    #[arg(long)]
    pub servers: Option<String>,
    /// Keys to place.
    #[arg(required = true)]
    pub keys: Vec<String>,
}

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
}

/// The shortest admin token accepted.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// A token, checked for length; `required` says what else could stand in
/// for a missing one.
fn admin_token(token: Option<String>, required: bool) -> Result<Option<String>, ConfigError> {
    match token {
        None if !required => Ok(None),
        None => Err(ConfigError::Missing {
            what: "--admin-token or mutual TLS (the admin API is never open)",
        }),
        Some(t) if t.trim().len() < MIN_ADMIN_TOKEN_LEN => Err(ConfigError::Invalid {
            what: "--admin-token",
            value: "<redacted>".into(),
            expected: "a token of at least 16 characters",
        }),
        Some(t) => Ok(Some(t.trim().to_owned())),
    }
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
                let config = crate::tls::server_config_from_files(cert, key)
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
                        let tls = || -> Result<_, crate::tls::TlsError> {
                            crate::tls::server_config(
                                crate::tls::load_certs(cert)?,
                                crate::tls::load_key(key)?,
                                Some(crate::tls::load_roots(ca)?),
                            )
                        };
                        Some(tls().map_err(|e| ConfigError::Tls(e.to_string()))?)
                    }
                    _ => None,
                };
                Some(crate::node::admin::AdminConfig {
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
        })
    }
}

/// `memgate proxy` flags. Each also reads `MEMGATE_PROXY_<FLAG>`, and
/// `--config FILE` (TOML, the same keys with underscores) fills what neither
/// the flags nor the environment set.
#[derive(Clone, Debug, Default, Args, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ProxyArgs {
    /// TOML file with any of these settings.
    #[arg(long, env = "MEMGATE_PROXY_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Client listener [default: 127.0.0.1:11211]; non-loopback needs --allow-remote.
    #[arg(long, env = "MEMGATE_PROXY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Allow a non-loopback --listen (whoever connects gets a logged-in session).
    #[arg(long, env = "MEMGATE_PROXY_ALLOW_REMOTE")]
    #[serde(default)]
    pub allow_remote: bool,
    /// Comma-separated nodes: host:port[:weight] or name=host:port
    /// [default: $MEMCACHIER_SERVERS, else $MEMCACHE_SERVERS].
    #[arg(long, env = "MEMGATE_PROXY_SERVERS")]
    pub servers: Option<String>,
    /// Connect to every node's host on this port (the hosted service: 11219).
    #[arg(long, env = "MEMGATE_PROXY_TLS_PORT")]
    pub tls_port: Option<u16>,
    /// Name every node certificate must carry [default: each entry's host].
    #[arg(long, env = "MEMGATE_PROXY_SERVER_NAME")]
    pub server_name: Option<String>,
    /// The private root CA (PEM) node certificates must chain to.
    #[arg(long, env = "MEMGATE_PROXY_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS.
    #[arg(long, env = "MEMGATE_PROXY_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, env = "MEMGATE_PROXY_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
    /// SASL username [default: $MEMCACHIER_USERNAME, else $MEMCACHE_USERNAME].
    #[arg(long, env = "MEMGATE_PROXY_USERNAME")]
    pub username: Option<String>,
    /// SASL password [default: $MEMCACHIER_PASSWORD, else $MEMCACHE_PASSWORD].
    #[arg(long, env = "MEMGATE_PROXY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Long-lived connections per node [default: 2].
    #[arg(long, env = "MEMGATE_PROXY_CONNECTIONS_PER_NODE")]
    pub connections_per_node: Option<usize>,
    /// Per-request timeout [default: 1s].
    #[arg(long, env = "MEMGATE_PROXY_TIMEOUT")]
    pub timeout: Option<String>,
    /// How long a failed node stays down before it is retried [default: 30s].
    #[arg(long, env = "MEMGATE_PROXY_DOWN_RETRY_DELAY")]
    pub down_retry_delay: Option<String>,
    /// What a down node's keys get: error (SERVER_ERROR) or eject (rehash) [default: error].
    #[arg(long, env = "MEMGATE_PROXY_FAILOVER")]
    pub failover: Option<crate::proxy::pool::Failover>,
    /// Prometheus /metrics, /healthz, /readyz [default: 127.0.0.1:9151]; "none" turns it off.
    #[arg(long, env = "MEMGATE_PROXY_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// On SIGTERM, how long in-flight requests may take [default: 5s].
    #[arg(long, env = "MEMGATE_PROXY_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<String>,
    /// Largest key + value accepted from clients [default: 1MiB].
    #[arg(long, env = "MEMGATE_PROXY_MAX_ITEM_SIZE")]
    pub max_item_size: Option<String>,
}

impl ProxyArgs {
    /// Fill unset fields from `other` (the config file).
    fn or(self, other: ProxyArgs) -> ProxyArgs {
        ProxyArgs {
            config: self.config,
            listen: self.listen.or(other.listen),
            allow_remote: self.allow_remote || other.allow_remote,
            servers: self.servers.or(other.servers),
            tls_port: self.tls_port.or(other.tls_port),
            server_name: self.server_name.or(other.server_name),
            ca: self.ca.or(other.ca),
            client_cert: self.client_cert.or(other.client_cert),
            client_key: self.client_key.or(other.client_key),
            username: self.username.or(other.username),
            password: self.password.or(other.password),
            connections_per_node: self.connections_per_node.or(other.connections_per_node),
            timeout: self.timeout.or(other.timeout),
            down_retry_delay: self.down_retry_delay.or(other.down_retry_delay),
            failover: self.failover.or(other.failover),
            metrics_listen: self.metrics_listen.or(other.metrics_listen),
            drain_timeout: self.drain_timeout.or(other.drain_timeout),
            max_item_size: self.max_item_size.or(other.max_item_size),
        }
    }

    /// Merge flags/env, the config file and the MEMCACHIER_* variables, then
    /// validate everything and load the TLS material.
    pub fn into_config(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<crate::proxy::ProxyConfig, ConfigError> {
        let args = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let file: ProxyArgs = toml::from_str(&text).map_err(|e| ConfigError::File {
                    path: path.clone(),
                    reason: e.message().to_string(),
                })?;
                self.or(file)
            }
            None => self,
        };
        let hosted = |suffix: &str| {
            env(&format!("MEMCACHIER_{suffix}"))
                .filter(|v| !v.is_empty())
                .or_else(|| env(&format!("MEMCACHE_{suffix}")).filter(|v| !v.is_empty()))
        };
        let invalid =
            |what: &'static str, value: &str, expected: &'static str| ConfigError::Invalid {
                what,
                value: value.to_string(),
                expected,
            };
        let listen = args
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 11211)));
        if !listen.ip().is_loopback() && !args.allow_remote {
            return Err(invalid(
                "--listen",
                &listen.to_string(),
                "a loopback address (whoever connects gets a logged-in session; add --allow-remote to override)",
            ));
        }
        let servers_text =
            args.servers
                .or_else(|| hosted("SERVERS"))
                .ok_or(ConfigError::Missing {
                    what: "--servers (or MEMCACHIER_SERVERS)",
                })?;
        let mut servers = Vec::new();
        for entry in servers_text
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            servers.push(
                crate::proxy::ring::parse_server_entry(entry)
                    .map_err(|e| ConfigError::Servers(e.to_string()))?,
            );
        }
        if servers.is_empty() {
            return Err(ConfigError::Missing {
                what: "--servers (or MEMCACHIER_SERVERS)",
            });
        }
        let username =
            args.username
                .or_else(|| hosted("USERNAME"))
                .ok_or(ConfigError::Missing {
                    what: "--username (or MEMCACHIER_USERNAME)",
                })?;
        let password =
            args.password
                .or_else(|| hosted("PASSWORD"))
                .ok_or(ConfigError::Missing {
                    what: "--password (or MEMCACHIER_PASSWORD)",
                })?;
        let ca = args.ca.ok_or(ConfigError::Missing {
            what: "--ca (the private root CA, PEM)",
        })?;
        let client = match (args.client_cert, args.client_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Missing {
                    what: "both --client-cert and --client-key",
                })
            }
        };
        let tls = crate::tls::client_config_from_files(
            &ca,
            client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
        let duration = |what: &'static str, value: Option<String>, default: &str| {
            let text = value.unwrap_or_else(|| default.to_string());
            parse_duration_arg(&text)
                .map_err(|_| invalid(what, &text, "a duration such as 500ms, 1s or 30s"))
        };
        let timeout = duration("--timeout", args.timeout, "1s")?;
        let down_retry_delay = duration("--down-retry-delay", args.down_retry_delay, "30s")?;
        let drain_timeout = duration("--drain-timeout", args.drain_timeout, "5s")?;
        if timeout.is_zero() {
            return Err(invalid("--timeout", "0", "a positive duration"));
        }
        let metrics_listen = match args.metrics_listen.as_deref().unwrap_or("127.0.0.1:9151") {
            "none" => None,
            addr => Some(addr.parse().map_err(|_| {
                invalid(
                    "--metrics-listen",
                    addr,
                    "an address such as 127.0.0.1:9151, or none",
                )
            })?),
        };
        let size_text = args.max_item_size.unwrap_or_else(|| "1MiB".into());
        let max_item_size = parse_size_arg(&size_text)
            .map_err(|_| invalid("--max-item-size", &size_text, "a size such as 1MiB"))?;
        let connections_per_node = args.connections_per_node.unwrap_or(2);
        if connections_per_node == 0 {
            return Err(invalid("--connections-per-node", "0", "at least 1"));
        }
        Ok(crate::proxy::ProxyConfig {
            listen,
            servers,
            tls_port: args.tls_port,
            server_name: args.server_name,
            tls,
            username,
            password,
            connections_per_node,
            timeout,
            connect_timeout: timeout.max(Duration::from_secs(2)),
            down_retry_delay,
            failover: args.failover.unwrap_or(crate::proxy::pool::Failover::Error),
            metrics_listen,
            drain_timeout,
            max_item_size: usize::try_from(max_item_size).unwrap_or(usize::MAX),
            reload_from: None,
        })
    }
}

/// Text or binary, for `memgate bench --protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchProtocol {
    Text,
    Binary,
}

/// Key choice, for `memgate bench --key-pattern`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchKeyPattern {
    Uniform,
    Zipf,
}

/// `memgate bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server to load, host:port.
    #[arg(long)]
    pub server: String,
    /// Which protocol to speak.
    #[arg(long, value_enum, default_value = "text")]
    pub protocol: BenchProtocol,
    /// Log in: SASL PLAIN over binary, `set <user> 0 0 <len>` over text.
    #[arg(long, requires = "password")]
    pub username: Option<String>,
    /// The password for --username.
    #[arg(
        long,
        env = "MEMGATE_BENCH_PASSWORD",
        hide_env_values = true,
        requires = "username"
    )]
    pub password: Option<String>,
    /// Connect with TLS, verified against --ca.
    #[arg(long, requires = "ca")]
    pub tls: bool,
    /// The root CA (PEM) the server's certificate must chain to.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The name the certificate must carry [default: the host of --server].
    #[arg(long)]
    pub server_name: Option<String>,
    /// Connections, each a task.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// SET:GET ratio.
    #[arg(long, default_value = "1:10")]
    pub ratio: String,
    /// Keys are memgate-bench:0 .. memgate-bench:N-1.
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// How keys are drawn.
    #[arg(long, value_enum, default_value = "uniform")]
    pub key_pattern: BenchKeyPattern,
    /// Exponent of --key-pattern zipf.
    #[arg(long, default_value_t = 0.99)]
    pub zipf_exponent: f64,
    /// Value size in bytes: N or MIN-MAX (each key keeps its own size).
    #[arg(long, default_value = "32")]
    pub value_size: String,
    /// How long to measure [default: 10s].
    #[arg(long, conflicts_with = "requests", value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// Measure this many requests in total instead.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Offered load in ops/s; latency then counts from each intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// A reply later than this is an error, and the connection is reopened.
    #[arg(long, default_value = "1s", value_parser = parse_duration_arg)]
    pub timeout: Duration,
    /// Set every key once before measuring, so gets hit.
    #[arg(long)]
    pub prefill: bool,
    /// Check every hit carries its key's value (counted as an error if not).
    #[arg(long)]
    pub verify: bool,
    /// Print one JSON object on stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// Validate the flags and load the CA.
    pub fn into_config(self) -> Result<crate::bench::BenchConfig, ConfigError> {
        use crate::bench::{self, BenchConfig, Login, Protocol, Stop, TlsTarget};
        let invalid = |what: &'static str, value: &dyn ToString, expected: &'static str| {
            ConfigError::Invalid {
                what,
                value: value.to_string(),
                expected,
            }
        };
        let host = match self.server.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host,
            _ => return Err(invalid("--server", &self.server, "host:port")),
        };
        let tls = match (self.tls, &self.ca) {
            (true, Some(ca)) => {
                let name = self.server_name.as_deref().unwrap_or(host);
                Some(TlsTarget {
                    config: crate::tls::client_config_from_files(ca, None)
                        .map_err(|e| ConfigError::Tls(e.to_string()))?,
                    server_name: crate::tls::server_name(name)
                        .map_err(|e| ConfigError::Tls(e.to_string()))?,
                })
            }
            (true, None) => {
                return Err(ConfigError::Missing {
                    what: "--ca for --tls",
                })
            }
            (false, _) if self.ca.is_some() || self.server_name.is_some() => {
                return Err(ConfigError::Missing {
                    what: "--tls (--ca and --server-name only apply to TLS)",
                })
            }
            (false, _) => None,
        };
        let login = match (self.username, self.password) {
            (Some(username), Some(password)) => {
                if username.is_empty()
                    || username.len() > crate::protocol::MAX_KEY_LEN
                    || username
                        .bytes()
                        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                {
                    return Err(invalid(
                        "--username",
                        &username,
                        "1 to 250 characters without spaces",
                    ));
                }
                Some(Login { username, password })
            }
            (None, None) => None,
            _ => {
                return Err(ConfigError::Missing {
                    what: "both --username and --password",
                })
            }
        };
        if self.connections == 0 || self.connections > bench::MAX_CONNECTIONS {
            return Err(invalid("--connections", &self.connections, "1 to 1000"));
        }
        if self.pipeline == 0 || self.pipeline > bench::MAX_PIPELINE {
            return Err(invalid("--pipeline", &self.pipeline, "1 to 10000"));
        }
        let ratio = self
            .ratio
            .split_once(':')
            .and_then(|(s, g)| Some((s.trim().parse().ok()?, g.trim().parse().ok()?)))
            .filter(|&(s, g): &(u32, u32)| s > 0 || g > 0)
            .ok_or_else(|| invalid("--ratio", &self.ratio, "SET:GET such as 1:10"))?;
        if self.key_space == 0 {
            return Err(invalid("--key-space", &0, "at least 1"));
        }
        let key_pattern = match self.key_pattern {
            BenchKeyPattern::Uniform => bench::keys::KeyPattern::Uniform,
            BenchKeyPattern::Zipf if self.zipf_exponent.is_finite() && self.zipf_exponent > 0.0 => {
                bench::keys::KeyPattern::Zipf {
                    exponent: self.zipf_exponent,
                }
            }
            BenchKeyPattern::Zipf => {
                return Err(invalid(
                    "--zipf-exponent",
                    &self.zipf_exponent,
                    "a positive number",
                ))
            }
        };
        let size = |text: &str| {
            parse_size_arg(text.trim())
                .ok()
                .and_then(|n| usize::try_from(n).ok())
        };
        let value_size = match self.value_size.split_once('-') {
            Some((min, max)) => size(min).zip(size(max)),
            None => size(&self.value_size).map(|n| (n, n)),
        }
        .filter(|&(min, max)| min <= max && max <= bench::MAX_VALUE_SIZE)
        .ok_or_else(|| {
            invalid(
                "--value-size",
                &self.value_size,
                "N or MIN-MAX bytes, at most 1MiB - 64",
            )
        })?;
        let stop = match (self.duration, self.requests) {
            (_, Some(0)) => return Err(invalid("--requests", &0, "at least 1")),
            (_, Some(n)) => Stop::Requests(n),
            (Some(d), None) if d.is_zero() => {
                return Err(invalid("--duration", &"0", "a positive duration"))
            }
            (Some(d), None) => Stop::After(d),
            (None, None) => Stop::After(Duration::from_secs(10)),
        };
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(invalid("--rate", &rate, "a positive number of ops/s"));
            }
        }
        if self.timeout.is_zero() {
            return Err(invalid("--timeout", &"0", "a positive duration"));
        }
        Ok(BenchConfig {
            server: self.server,
            protocol: match self.protocol {
                BenchProtocol::Text => Protocol::Text,
                BenchProtocol::Binary => Protocol::Binary,
            },
            login,
            tls,
            connections: self.connections,
            pipeline: self.pipeline,
            ratio,
            key_space: self.key_space,
            key_pattern,
            value_size,
            stop,
            rate: self.rate,
            timeout: self.timeout,
            prefill: self.prefill,
            verify: self.verify,
            progress: true,
        })
    }
}

#[cfg(test)]
mod admin_and_analytics_tests {
    use super::*;

    fn parse(args: &[&str]) -> Role {
        let mut all = vec!["memgate"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().role
    }

    /// `memgate node ARGS` validated: the admin config, or the error text.
    fn node_admin(args: &[&str]) -> Result<Option<crate::node::admin::AdminConfig>, String> {
        let Role::Node(node) = parse(&[&["node"], args].concat()) else {
            panic!()
        };
        node.into_config()
            .map(|c| c.admin)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn node_admin_is_off_by_default_and_needs_a_token() {
        assert!(node_admin(&["--caches", "c.toml"]).unwrap().is_none());
        let e = node_admin(&["--admin-listen", "127.0.0.1:0"]).unwrap_err();
        assert!(e.contains("--admin-token"), "{e}");
        let e =
            node_admin(&["--admin-listen", "127.0.0.1:0", "--admin-token", "short"]).unwrap_err();
        assert!(e.contains("16") && !e.contains("short"), "{e}");
        let admin = node_admin(&[
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-token",
            "a-long-enough-token",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(admin.token.as_deref(), Some("a-long-enough-token"));
        // --admin-ca needs the node's certificate and an admin listener.
        assert!(Cli::try_parse_from(["memgate", "node", "--admin-ca", "ca.pem"]).is_err());
        let e =
            node_admin(&["--cert", "c.pem", "--key", "k.pem", "--admin-ca", "ca.pem"]).unwrap_err();
        assert!(e.contains("--admin-listen"), "{e}");
    }

    #[test]
    fn analytics_flags() {
        let Role::Analytics(args) = parse(&[
            "analytics",
            "--nodes",
            "10.0.0.1:11211=10.0.0.1:9400,10.0.0.2:9400",
            "--admin-token",
            "a-long-enough-token",
            "--sample-interval",
            "1m",
        ]) else {
            panic!()
        };
        let c = args.into_config().unwrap();
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.nodes[0].label, "10.0.0.1:11211");
        assert_eq!(c.sample_interval, Duration::from_secs(60));
        assert_eq!(c.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.disable_after, None);
        assert!(c.tls.is_none());
        // A client certificate needs its key and the CA.
        assert!(Cli::try_parse_from([
            "memgate",
            "analytics",
            "--nodes",
            "a:1",
            "--client-cert",
            "c.pem"
        ])
        .is_err());
        for bad in [
            vec![
                "analytics",
                "--nodes",
                "nope",
                "--admin-token",
                "a-long-enough-token",
            ],
            vec!["analytics", "--nodes", "a:1"],
        ]
        .into_iter()
        .chain(["--sample-interval", "--disable-after"].map(|flag| {
            let token = ["--admin-token", "a-long-enough-token"];
            [&["analytics", "--nodes", "a:1"][..], &token, &[flag, "0s"]].concat()
        })) {
            let Role::Analytics(args) = parse(&bad) else {
                panic!()
            };
            assert!(args.into_config().is_err(), "{bad:?}");
        }
    }
}
