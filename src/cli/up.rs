//! `memgate up` flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use memgate::config::ConfigError;

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
    pub fn into_config(self) -> Result<memgate::local::UpConfig, ConfigError> {
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
        Ok(memgate::local::UpConfig {
            nodes: self.nodes,
            listen: self.listen,
            metrics_listen,
            dir: self.dir,
        })
    }
}
