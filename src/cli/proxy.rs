//! `memgate proxy` flags, the config file and the MEMCACHIER_* variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use memgate::config::ConfigError;
use memgate::proxy::config::{connect_timeout, defaults};
use memgate::proxy::ProxyConfig;
use memgate::units::{parse_duration_arg, parse_size_arg};

/// Declares the flags' struct and derives `or` from the same field list, so
/// that a new flag is merged with the config file without a line of its own.
macro_rules! merged_args {
    ($(#[$meta:meta])* pub struct $name:ident {
        $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)*
    }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl $name {
            /// Fill what the flags and environment left unset from `other`
            /// (the config file).
            fn or(self, other: $name) -> $name {
                $name {
                    $($field: Unset::or_else(self.$field, other.$field),)*
                }
            }
        }
    };
}

/// A setting the flags may leave unset: `None`, or a switch left off.
trait Unset {
    fn or_else(self, other: Self) -> Self;
}

impl<T> Unset for Option<T> {
    fn or_else(self, other: Self) -> Self {
        self.or(other)
    }
}

impl Unset for bool {
    fn or_else(self, other: Self) -> Self {
        self || other
    }
}

merged_args! {
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
    /// What to speak to the nodes: auto (found at each connection's login,
    /// one of the three below), meta (memgate nodes: MemCachier's ASCII
    /// login, every meta flag passes), meta-memcached (memcached -Y -Z: its
    /// ASCII login) or binary (memcached -S -Z: SASL; meta flags binary
    /// cannot carry are refused) [default: auto].
    #[arg(long, env = "MEMGATE_PROXY_UPSTREAM_PROTOCOL")]
    pub upstream_protocol: Option<memgate::proxy::upstream::UpstreamProtocol>,
    /// Long-lived connections per node [default: 2].
    #[arg(long, env = "MEMGATE_PROXY_CONNECTIONS_PER_NODE")]
    pub connections_per_node: Option<usize>,
    /// Per-request timeout [default: 1s].
    #[arg(long, env = "MEMGATE_PROXY_TIMEOUT")]
    pub timeout: Option<String>,
    /// How often a down node is probed; it serves again as soon as a probe
    /// succeeds [default: 1s].
    #[arg(long, env = "MEMGATE_PROXY_DOWN_RETRY_DELAY")]
    pub down_retry_delay: Option<String>,
    /// Consecutive failures (timeouts, resets) that mark a node down; a
    /// refused connect, certificate or login marks it down at once [default: 2].
    #[arg(long, env = "MEMGATE_PROXY_FAILURE_LIMIT")]
    pub failure_limit: Option<u32>,
    /// Ping idle upstream connections this often, so that NATs and load
    /// balancers keep them and dead ones are replaced early; 0 turns it off
    /// [default: 30s].
    #[arg(long, env = "MEMGATE_PROXY_KEEPALIVE")]
    pub keepalive: Option<String>,
    /// What a down node's keys get: error (SERVER_ERROR) or eject (rehash) [default: error].
    #[arg(long, env = "MEMGATE_PROXY_FAILOVER")]
    pub failover: Option<memgate::proxy::pool::Failover>,
    /// Prometheus /metrics, /healthz, /readyz [default: 127.0.0.1:9151]; "none" turns it off.
    #[arg(long, env = "MEMGATE_PROXY_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// On SIGTERM, how long in-flight requests may take [default: 5s].
    #[arg(long, env = "MEMGATE_PROXY_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<String>,
    /// Largest key + value accepted from clients [default: 1MiB].
    #[arg(long, env = "MEMGATE_PROXY_MAX_ITEM_SIZE")]
    pub max_item_size: Option<String>,
    /// Threads that serve clients [default: 1, one event loop, as twemproxy].
    /// More spread clients over a work-stealing pool of that many, for more
    /// throughput than one core gives, at more CPU per request. Read at
    /// start only: a reload keeps the threads it has.
    #[arg(long, env = "MEMGATE_PROXY_THREADS")]
    pub threads: Option<usize>,
    /// Keep polling for this long after each reply instead of sleeping
    /// [default: off]. Saves a sleeping vCPU's wake-up on a client's next
    /// request (about a fifth of a one-connection round trip on a VM) at
    /// the cost of CPU: up to the window after every reply, up to a core.
    /// Up to 1ms, such as 100us; needs --threads 1. Read at start only.
    #[arg(long, env = "MEMGATE_PROXY_BUSY_POLL")]
    pub busy_poll: Option<String>,
    /// What the sidecar may hold for one client: replies not yet written
    /// plus requests not yet answered [default: 4MiB]. Past it the client is
    /// not read until it reads its replies, as memcached does; at least
    /// --max-item-size.
    #[arg(long, env = "MEMGATE_PROXY_CLIENT_BUFFER")]
    pub client_buffer: Option<String>,
    /// After a reload that moves keys to other nodes, read a moved key that
    /// misses on its new node from the node it left, for this long, so the
    /// cache does not go cold [default: 1h]; 0 turns it off.
    #[arg(long, env = "MEMGATE_PROXY_WARMUP")]
    pub warmup: Option<String>,
    /// How long after a reload the previous node stays first for moved
    /// keys: at least how far apart this app's sidecars reload [default: 10s].
    #[arg(long, env = "MEMGATE_PROXY_WARMUP_SETTLE")]
    pub warmup_settle: Option<String>,
    /// Keep each key on this many nodes: writes go to all of them, reads
    /// to the first that may be trusted, then the next [default: 1]. A node
    /// that missed writes is not read until they are undone there and
    /// --warmup-settle has passed (docs/proxy.md, "Replicas"). 1 to 8.
    #[arg(long, env = "MEMGATE_PROXY_REPLICAS")]
    pub replicas: Option<usize>,
    /// With --replicas 2 or more: keys remembered per node written while it
    /// could not be, and deleted there when it returns [default: 10000].
    /// Past it, the node's part of the cache is flushed instead.
    #[arg(long, env = "MEMGATE_PROXY_HINTS")]
    pub hints: Option<usize>,
}
}

use memgate::proxy::ring::MAX_REPLICAS;
/// The most `--threads` takes.
const MAX_THREADS: usize = 1024;
/// The longest `--busy-poll` window: a vCPU's wake-up costs tens of
/// microseconds, so polling for longer buys nothing more.
const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

impl ProxyArgs {
    /// The flags and environment, with what they leave unset filled from the
    /// config file.
    fn merged(self) -> Result<ProxyArgs, ConfigError> {
        let Some(path) = &self.config else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let file: ProxyArgs = toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.clone(),
            reason: e.message().to_string(),
        })?;
        Ok(self.or(file))
    }

    /// How many threads serve clients (the runtime is built before the rest
    /// of the configuration is read, so this is read on its own).
    pub fn threads(&self) -> Result<usize, ConfigError> {
        let threads = self.clone().merged()?.threads.unwrap_or(defaults::THREADS);
        if !(1..=MAX_THREADS).contains(&threads) {
            return Err(ConfigError::Invalid {
                what: "--threads",
                value: threads.to_string(),
                expected: "1 to 1024",
            });
        }
        Ok(threads)
    }

    /// Merge flags/env, the config file and the MEMCACHIER_* variables, then
    /// validate everything and load the TLS material.
    pub fn into_config(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProxyConfig, ConfigError> {
        let args = self.merged()?;
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
        let listen = args.listen.unwrap_or(defaults::LISTEN);
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
                memgate::proxy::ring::parse_server_entry(entry)
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
        let tls = memgate::tls::client_config_from_files(
            &ca,
            client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
        let duration = |what: &'static str, value: Option<String>, default: Duration| {
            let Some(text) = value else {
                return Ok(default);
            };
            parse_duration_arg(&text)
                .map_err(|_| invalid(what, &text, "a duration such as 500ms, 1s or 30s"))
        };
        let timeout = duration("--timeout", args.timeout, defaults::TIMEOUT)?;
        let down_retry_delay = duration(
            "--down-retry-delay",
            args.down_retry_delay,
            defaults::DOWN_RETRY_DELAY,
        )?;
        if down_retry_delay.is_zero() {
            return Err(invalid("--down-retry-delay", "0", "a positive duration"));
        }
        let keepalive = duration("--keepalive", args.keepalive, defaults::KEEPALIVE)?;
        let failure_limit = args.failure_limit.unwrap_or(defaults::FAILURE_LIMIT);
        if failure_limit == 0 {
            return Err(invalid("--failure-limit", "0", "at least 1"));
        }
        let drain_timeout = duration(
            "--drain-timeout",
            args.drain_timeout,
            defaults::DRAIN_TIMEOUT,
        )?;
        if timeout.is_zero() {
            return Err(invalid("--timeout", "0", "a positive duration"));
        }
        let metrics_listen = match args.metrics_listen.as_deref() {
            None => Some(defaults::METRICS_LISTEN),
            Some("none") => None,
            Some(addr) => Some(addr.parse().map_err(|_| {
                invalid(
                    "--metrics-listen",
                    addr,
                    "an address such as 127.0.0.1:9151, or none",
                )
            })?),
        };
        let size = |what: &'static str, value: Option<String>, default: usize| {
            let Some(text) = value else {
                return Ok(default);
            };
            parse_size_arg(&text)
                .map(|size| usize::try_from(size).unwrap_or(usize::MAX))
                .map_err(|_| invalid(what, &text, "a size such as 1MiB"))
        };
        let max_item_size = size(
            "--max-item-size",
            args.max_item_size,
            defaults::MAX_ITEM_SIZE,
        )?;
        let client_buffer = size(
            "--client-buffer",
            args.client_buffer,
            defaults::CLIENT_BUFFER.max(max_item_size),
        )?;
        if client_buffer < max_item_size {
            return Err(invalid(
                "--client-buffer",
                &client_buffer.to_string(),
                "at least --max-item-size, so that any item can pass",
            ));
        }
        let busy_poll = duration("--busy-poll", args.busy_poll, Duration::ZERO)?;
        if busy_poll > MAX_BUSY_POLL {
            return Err(invalid(
                "--busy-poll",
                &format!("{}us", busy_poll.as_micros()),
                "a duration up to 1ms, such as 100us",
            ));
        }
        // The polling task can poll the sockets only on the runtime that
        // owns them: with a work-stealing pool another worker may sit in
        // epoll_wait while it spins.
        match args.threads {
            Some(threads) if threads != 1 && !busy_poll.is_zero() => {
                return Err(invalid(
                    "--busy-poll",
                    &format!("{}us with --threads {threads}", busy_poll.as_micros()),
                    "--threads 1 (busy polling runs on the one event loop)",
                ));
            }
            _ => {}
        }
        let warmup = duration("--warmup", args.warmup, defaults::WARMUP)?;
        let warmup_settle = duration(
            "--warmup-settle",
            args.warmup_settle,
            defaults::WARMUP_SETTLE,
        )?;
        let replicas = args.replicas.unwrap_or(defaults::REPLICAS);
        if !(1..=MAX_REPLICAS).contains(&replicas) {
            return Err(invalid("--replicas", &replicas.to_string(), "1 to 8"));
        }
        let hints = args.hints.unwrap_or(defaults::HINTS);
        let connections_per_node = args
            .connections_per_node
            .unwrap_or(defaults::CONNECTIONS_PER_NODE);
        if connections_per_node == 0 {
            return Err(invalid("--connections-per-node", "0", "at least 1"));
        }
        let fingerprint = memgate::tls::files_fingerprint(
            std::iter::once(ca.as_path())
                .chain(client.iter().flat_map(|(c, k)| [c.as_path(), k.as_path()])),
        );
        let mut config = ProxyConfig::new(servers, tls, username, password);
        config.listen = listen;
        config.tls_port = args.tls_port;
        config.server_name = args.server_name;
        config.upstream_protocol = args.upstream_protocol.unwrap_or_default();
        config.connections_per_node = connections_per_node;
        config.timeout = timeout;
        config.connect_timeout = connect_timeout(timeout);
        config.down_retry_delay = down_retry_delay;
        config.failure_limit = failure_limit;
        config.keepalive = keepalive;
        config.tls_fingerprint = Some(fingerprint);
        if let Some(failover) = args.failover {
            config.failover = failover;
        }
        config.metrics_listen = metrics_listen;
        config.drain_timeout = drain_timeout;
        config.max_item_size = max_item_size;
        config.client_buffer = client_buffer;
        config.busy_poll = (!busy_poll.is_zero()).then_some(busy_poll);
        config.warmup = warmup;
        config.warmup_settle = warmup_settle;
        config.replicas = replicas;
        config.hints = hints;
        Ok(config)
    }
}
