//! `memgate bench` flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use memgate::config::ConfigError;
use memgate::units::{parse_duration_arg, parse_size_arg};

/// Text, binary or meta, for `memgate bench --protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchProtocol {
    Text,
    Binary,
    Meta,
}

/// Key choice, for `memgate bench --key-pattern`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchKeyPattern {
    Uniform,
    Zipf,
}

/// Whose keys each connection uses, for `memgate bench --check-keys`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchCheckKeys {
    Own,
    Shared,
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
    /// Log in: SASL PLAIN over binary, `set <user> 0 0 <len>` over text and meta.
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
    /// Check every hit carries its key's value (counted as an error if not);
    /// --check judges far more (whose value, which write, lost, order).
    #[arg(long)]
    pub verify: bool,
    /// Connection churn: each of --connections workers loops connect (TLS
    /// and login as asked), one request, reply, close; ops are connections.
    #[arg(long)]
    pub churn: bool,
    /// Print one JSON object on stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// A consistency check instead of a benchmark: every value says which
    /// connection wrote it, for which key, as which write, and every reply
    /// is judged (stale, foreign, lost, corrupt, out of order). Exits 1 on
    /// any violation. See docs/bench-check.md.
    #[arg(long)]
    pub check: bool,
    /// With --check: each connection its own keys (read-your-writes), or
    /// every connection every key (sets only).
    #[arg(long, value_enum, default_value = "own", requires = "check")]
    pub check_keys: BenchCheckKeys,
    /// With --check: keys per get (text `get k1 k2 …`, binary GETKQ… NOOP,
    /// meta `mg q`… `mn`).
    #[arg(long, default_value_t = 1, requires = "check")]
    pub check_multiget: usize,
    /// With --check: send about half the requests quiet (binary SETQ,
    /// DELETEQ, GETKQ; meta `q`), each batch closed by NOOP / `mn`.
    #[arg(long, requires = "check")]
    pub check_quiet: bool,
    /// With --check: also fail (exit 1) on more than N errors, timeouts and
    /// requests lost with a connection [default: errors never fail].
    #[arg(long, requires = "check")]
    pub check_max_errors: Option<u64>,
    /// With --check: read `stats` (evictions, flushes, restarts) from these
    /// host:port servers (plain text protocol) instead of --server, e.g. the
    /// memcached servers behind a proxy. Repeat or separate with commas.
    #[arg(long, value_delimiter = ',', requires = "check")]
    pub check_stats: Vec<String>,
}

impl BenchArgs {
    /// Validate the flags and load the CA.
    pub fn into_config(self) -> Result<memgate::bench::BenchConfig, ConfigError> {
        use memgate::bench::{self, BenchConfig, Login, Protocol, Stop, TlsTarget};
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
                    config: memgate::tls::client_config_from_files(ca, None)
                        .map_err(|e| ConfigError::Tls(e.to_string()))?,
                    server_name: memgate::tls::server_name(name)
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
                    || username.len() > memgate::protocol::MAX_KEY_LEN
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
        if self.churn && self.pipeline != 1 {
            return Err(invalid(
                "--pipeline",
                &self.pipeline,
                "1 with --churn (one request per connection)",
            ));
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
        let check = if self.check {
            if self.churn || self.rate.is_some() {
                return Err(ConfigError::Invalid {
                    what: "--check",
                    value: "with --churn or --rate".into(),
                    expected: "closed loop on long-lived connections",
                });
            }
            if self.check_multiget == 0 || self.check_multiget > bench::check::MAX_MULTIGET {
                return Err(invalid(
                    "--check-multiget",
                    &self.check_multiget,
                    "1 to 100",
                ));
            }
            if ratio.0 == 0 {
                return Err(invalid(
                    "--ratio",
                    &self.ratio,
                    "SET:GET with SET > 0 for --check",
                ));
            }
            if let Some(bad) = self
                .check_stats
                .iter()
                .find(|s| !matches!(s.rsplit_once(':'), Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok()))
            {
                return Err(invalid("--check-stats", bad, "host:port"));
            }
            Some(bench::check::CheckOptions {
                keys: match self.check_keys {
                    BenchCheckKeys::Own => bench::check::KeyMode::Own,
                    BenchCheckKeys::Shared => bench::check::KeyMode::Shared,
                },
                multiget: self.check_multiget,
                quiet: self.check_quiet,
                max_errors: self.check_max_errors,
                stats_from: self.check_stats,
            })
        } else {
            None
        };
        Ok(BenchConfig {
            server: self.server,
            protocol: match self.protocol {
                BenchProtocol::Text => Protocol::Text,
                BenchProtocol::Binary => Protocol::Binary,
                BenchProtocol::Meta => Protocol::Meta,
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
            churn: self.churn,
            check,
        })
    }
}
