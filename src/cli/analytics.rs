//! `memgate analytics` flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::admin_token;
use clap::Args;
use memgate::config::ConfigError;
use memgate::units::parse_duration_arg;

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
    pub fn into_config(self) -> Result<memgate::analytics::AnalyticsConfig, ConfigError> {
        let nodes =
            memgate::analytics::parse_nodes(&self.nodes).map_err(|value| ConfigError::Invalid {
                what: "--nodes",
                value,
                expected: "comma-separated host:port or name=host:port entries",
            })?;
        let admin_token = admin_token(self.admin_token, self.client_cert.is_none())?;
        let tls = match &self.ca {
            Some(ca) => {
                let client = self.client_cert.as_deref().zip(self.client_key.as_deref());
                Some(
                    memgate::tls::client_config_from_files(ca, client)
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
        Ok(memgate::analytics::AnalyticsConfig {
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
