//! The sidecar's configuration, and every default in one place: the
//! command line, `memgate up`, the tests and the manual take them from here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::pool::Failover;
use super::ring::ServerSpec;
use super::upstream::UpstreamProtocol;

/// Each setting's default, named.
pub mod defaults {
    use std::net::SocketAddr;
    use std::time::Duration;

    /// `--listen`: memcached's port, on loopback only.
    pub const LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 11211);
    /// `--metrics-listen`.
    pub const METRICS_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9151);
    /// `--connections-per-node`.
    pub const CONNECTIONS_PER_NODE: usize = 2;
    /// `--timeout`: every client request is answered within it.
    pub const TIMEOUT: Duration = Duration::from_secs(1);
    /// The least a connect (TCP, TLS and login) may take, whatever
    /// `--timeout` says: requests stop waiting for it at their own deadline.
    pub const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// `--down-retry-delay`.
    pub const DOWN_RETRY_DELAY: Duration = Duration::from_secs(1);
    /// `--failure-limit`, as twemproxy's `server_failure_limit`.
    pub const FAILURE_LIMIT: u32 = 2;
    /// `--keepalive`.
    pub const KEEPALIVE: Duration = Duration::from_secs(30);
    /// `--drain-timeout`.
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
    /// `--max-item-size`: the hosted service's limit on key + value.
    pub const MAX_ITEM_SIZE: usize = crate::protocol::DEFAULT_MAX_ITEM_SIZE;
    /// `--client-buffer`: a few maximum-size items.
    pub const CLIENT_BUFFER: usize = 4 * MAX_ITEM_SIZE;
    /// `--threads`: one event loop, as twemproxy.
    pub const THREADS: usize = 1;
    /// `--warmup`: how long after a reload moved keys are still read from
    /// the node they left (`proxy::warmup`). An hour: an item whose TTL is
    /// an hour or less expires within the window and its app rewrites it on
    /// the new node, so only longer-lived items miss when it ends. Over it,
    /// a miss of a moved key costs a second round trip and a write of one a
    /// delete on the other node: a fraction (the moved share) of requests.
    pub const WARMUP: Duration = Duration::from_secs(3600);
    /// `--warmup-settle`: how far apart the sidecars of one app may reload
    /// and still never read each other's overwritten values.
    pub const WARMUP_SETTLE: Duration = Duration::from_secs(10);
    /// `--replicas`: one node per key, as memcached clients place keys.
    pub const REPLICAS: usize = 1;
    /// `--hints`: keys remembered per node that missed writes. At most 250
    /// bytes each, so a few MiB per node at worst; past it the node's part
    /// of the cache is flushed when it returns (`proxy::replicas`).
    pub const HINTS: usize = 10_000;
}

/// Everything the proxy needs, validated.
#[derive(Clone)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub servers: Vec<ServerSpec>,
    /// Connect to every server's host on this port instead of its own.
    pub tls_port: Option<u16>,
    /// The name every node certificate must carry (default: each entry's host).
    pub server_name: Option<String>,
    pub tls: Arc<rustls::ClientConfig>,
    pub username: String,
    pub password: String,
    /// What the nodes are spoken to in (`--upstream-protocol`).
    pub upstream_protocol: UpstreamProtocol,
    pub connections_per_node: usize,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// How often a down node is probed (`--down-retry-delay`).
    pub down_retry_delay: Duration,
    /// Consecutive failures that mark a node down (`--failure-limit`).
    pub failure_limit: u32,
    /// Idle upstream connections are pinged this often (`--keepalive`; zero: never).
    pub keepalive: Duration,
    /// A digest of the TLS inputs (CA, client certificate and key) when they
    /// came from files, so that a reload can tell whether they changed; with
    /// `None`, only the very same `tls` config counts as unchanged.
    pub tls_fingerprint: Option<u64>,
    pub failover: Failover,
    pub metrics_listen: Option<SocketAddr>,
    pub drain_timeout: Duration,
    pub max_item_size: usize,
    /// What the sidecar may hold for one client: replies not yet written and
    /// requests not yet answered (`--client-buffer`; `proxy::budget`).
    pub client_buffer: usize,
    /// Poll this long after each reply instead of sleeping (`--busy-poll`;
    /// None: off). Needs the single-threaded runtime.
    pub busy_poll: Option<Duration>,
    /// After a reload, how long moved keys are read from their previous
    /// node too (`--warmup`; zero: not at all).
    pub warmup: Duration,
    /// How long the previous node stays primary after a reload (`--warmup-settle`).
    pub warmup_settle: Duration,
    /// Nodes that keep each key (`--replicas`).
    pub replicas: usize,
    /// Hints kept per node (`--hints`).
    pub hints: usize,
    /// Where the configuration came from, for SIGHUP (None: not reloadable).
    pub reload_from: Option<Arc<dyn Fn() -> Result<ProxyConfig, String> + Send + Sync>>,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("listen", &self.listen)
            .field("servers", &self.servers)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ProxyConfig {
    /// A configuration for `servers`, trusting `tls`, logging in as
    /// `username`, with every other setting at its default.
    pub fn new(
        servers: Vec<ServerSpec>,
        tls: Arc<rustls::ClientConfig>,
        username: String,
        password: String,
    ) -> ProxyConfig {
        ProxyConfig {
            listen: defaults::LISTEN,
            servers,
            tls_port: None,
            server_name: None,
            tls,
            username,
            password,
            upstream_protocol: UpstreamProtocol::default(),
            connections_per_node: defaults::CONNECTIONS_PER_NODE,
            timeout: defaults::TIMEOUT,
            connect_timeout: connect_timeout(defaults::TIMEOUT),
            down_retry_delay: defaults::DOWN_RETRY_DELAY,
            failure_limit: defaults::FAILURE_LIMIT,
            keepalive: defaults::KEEPALIVE,
            tls_fingerprint: None,
            failover: Failover::Error,
            metrics_listen: Some(defaults::METRICS_LISTEN),
            drain_timeout: defaults::DRAIN_TIMEOUT,
            max_item_size: defaults::MAX_ITEM_SIZE,
            client_buffer: defaults::CLIENT_BUFFER,
            busy_poll: None,
            warmup: defaults::WARMUP,
            warmup_settle: defaults::WARMUP_SETTLE,
            replicas: defaults::REPLICAS,
            hints: defaults::HINTS,
            reload_from: None,
        }
    }
}

/// How long a connect may take when requests time out after `timeout`.
pub fn connect_timeout(timeout: Duration) -> Duration {
    timeout.max(defaults::MIN_CONNECT_TIMEOUT)
}
