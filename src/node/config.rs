//! The node's configuration, and every default in one place: the command
//! line, `memgate up`, the tests and the manual take them from here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::admin;

/// Each setting's default, named.
pub mod defaults {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Duration;

    /// `--listen`: memcached's port, on loopback.
    pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 11211);
    /// `--tls-listen` when `--cert` is given: the hosted service's TLS port.
    pub const TLS_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 11219);
    /// `--memory-limit`: the cap on the sum of the caches' limits.
    pub const MEMORY_LIMIT: u64 = 64 << 20;
    /// `--max-item-size`: the hosted service's limit on key + value.
    pub const MAX_ITEM_SIZE: usize = crate::protocol::DEFAULT_MAX_ITEM_SIZE;
    /// `--auth-timeout`.
    pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
    /// `--max-connections`.
    pub const MAX_CONNECTIONS: usize = 4096;
    /// `--threads`: memcached's default `-t`, the fewest the node starts
    /// unless told otherwise, even on a machine with fewer cores
    /// (`node::threads` says why).
    pub const MIN_THREADS: usize = 4;
    /// The most `--threads` takes.
    pub const MAX_THREADS: usize = 1024;

    /// `--threads`: one session thread per core the process may run on, at
    /// least [`MIN_THREADS`].
    pub fn threads() -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores.clamp(MIN_THREADS, MAX_THREADS)
    }
}

/// Everything the node needs, validated.
#[derive(Clone)]
pub struct NodeConfig {
    /// Plain listener (None turns it off).
    pub listen: Option<SocketAddr>,
    /// TLS listener and its rustls config.
    pub tls_listen: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    /// The caches file; None only with `no_auth`.
    pub caches_path: Option<PathBuf>,
    /// Cap on the sum of every cache's memory limit.
    pub memory_limit: u64,
    /// Key + value limit.
    pub max_item_size: usize,
    pub auth_timeout: Duration,
    pub max_connections: usize,
    pub metrics_listen: Option<SocketAddr>,
    /// Testing only: one implicit cache, no login.
    pub no_auth: bool,
    /// The admin HTTP API (off unless set).
    pub admin: Option<admin::AdminConfig>,
    /// Each cache's what-if tracker ([`crate::mrc`]); off, the store skips it.
    pub what_if: bool,
    /// Session threads: each serves the connections dealt to it.
    pub threads: usize,
}

impl NodeConfig {
    /// A node serving the caches in `caches_path` on the default plain
    /// listener, with every other setting at its default.
    pub fn new(caches_path: Option<PathBuf>) -> NodeConfig {
        NodeConfig {
            listen: Some(defaults::LISTEN),
            tls_listen: None,
            caches_path,
            memory_limit: defaults::MEMORY_LIMIT,
            max_item_size: defaults::MAX_ITEM_SIZE,
            auth_timeout: defaults::AUTH_TIMEOUT,
            max_connections: defaults::MAX_CONNECTIONS,
            metrics_listen: None,
            no_auth: false,
            admin: None,
            what_if: true,
            threads: defaults::threads(),
        }
    }
}
