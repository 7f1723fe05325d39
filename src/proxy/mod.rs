//! The sidecar: `memgate proxy`.
//!
//! Any memcached client connects to it on loopback without TLS or a login;
//! each request travels over a pooled, verified TLS connection to the node
//! ketama picks, in meta after an ASCII login or in binary after SASL
//! (`--upstream-protocol`).
//!
//! - [`session`]: one client: parse, route, reply in order.
//! - [`ring`]: ketama placement, byte for byte libmemcached's.
//! - [`pool`]: the nodes, their pooled connections, failover.
//! - [`upstream`]: one logged-in TLS connection, meta or binary, pipelined.
//! - [`health`]: up/down state per node.

pub mod budget;
pub mod busy_poll;
pub mod config;
pub mod drain;
pub mod health;
mod pins;
pub mod pool;
pub mod replicas;
pub mod ring;
pub mod session;
mod stats;
pub mod upstream;
pub mod warmup;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics as m;
pub use config::ProxyConfig;
use pool::Cluster;
use ring::Ring;
use upstream::{Settings, Target};

/// Errors starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server list: {0}")]
    Ring(#[from] ring::RingError),
    #[error("server {0:?}: {1}")]
    ServerName(String, String),
}

/// State every client session shares; the cluster is swapped on SIGHUP.
pub struct ProxyShared {
    cluster: RwLock<Arc<Cluster>>,
    /// The cluster's `generation`, readable without the lock.
    generation: std::sync::atomic::AtomicU64,
    username: RwLock<String>,
    pub max_item_size: usize,
    /// What a session may hold for its client (`proxy::budget`).
    pub client_buffer: usize,
    /// Set with `--busy-poll`: sessions tell it when they reply.
    pub busy_poll: Option<Arc<busy_poll::BusyPoll>>,
}

impl ProxyShared {
    /// The current cluster's `generation`: a reload changes it.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn cluster(&self) -> Arc<Cluster> {
        match self.cluster.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Is this first `set` a client's ASCII login (MemCachier's form, key =
    /// username; or memcached -Y's, value = "username password")?
    pub fn is_ascii_login(&self, key: &[u8], value: &[u8]) -> bool {
        let Ok(user) = self.username.read() else {
            return false;
        };
        let user = user.as_bytes();
        key == user
            || (value.len() > user.len() && value.starts_with(user) && value[user.len()] == b' ')
    }
}

/// Build the upstream targets and cluster for a config. With `previous` (a
/// reload), every node whose target is unchanged is kept, with its
/// connections, its health and whatever it has in flight, provided the
/// credentials and TLS settings are the same; other nodes start afresh.
fn cluster_for(config: &ProxyConfig, previous: Option<&Cluster>) -> Result<Cluster, ProxyError> {
    let ring = Ring::new(&config.servers)?;
    let settings = Settings {
        tls: tokio_rustls::TlsConnector::from(Arc::clone(&config.tls)),
        protocol: config.upstream_protocol,
        username: config.username.clone(),
        password: config.password.clone(),
        connect_timeout: config.connect_timeout,
        request_timeout: config.timeout,
        keepalive: config.keepalive,
        tls_fingerprint: config.tls_fingerprint,
    };
    let reusable = previous.filter(|old| old.settings.same_login(&settings));
    let mut nodes = Vec::with_capacity(config.servers.len());
    for spec in &config.servers {
        let port = config.tls_port.unwrap_or(spec.port);
        let name = config
            .server_name
            .clone()
            .unwrap_or_else(|| spec.host.clone());
        let server_name = crate::tls::server_name(&name)
            .map_err(|e| ProxyError::ServerName(name.clone(), e.to_string()))?;
        let addr = if spec.host.contains(':') {
            format!("[{}]:{port}", spec.host)
        } else {
            format!("{}:{port}", spec.host)
        };
        let target = Target {
            name: spec.name.clone(),
            addr,
            server_name,
        };
        let kept = reusable.and_then(|old| old.nodes.iter().find(|n| n.target == target));
        nodes.push(match kept {
            Some(node) => Arc::clone(node),
            None => {
                upstream::announce(&target, config.upstream_protocol);
                Arc::new(pool::Upstream::new(
                    target,
                    config.connections_per_node,
                    config.failure_limit,
                ))
            }
        });
    }
    let warmup = previous.and_then(|old| warmup_from(config, old, &ring, &nodes));
    Ok(Cluster::new(
        nodes,
        ring,
        settings,
        config.failover,
        config.down_retry_delay,
    )
    .with_warmup(warmup)
    .with_replication(pool::Replication {
        replicas: config.replicas,
        hint_capacity: config.hints,
        quarantine: config.warmup_settle,
        warming: config.warmup,
    }))
}

/// The warm-up a reload from `old` to `ring` over `nodes` needs: a new one
/// if keys move, the one in progress if none do (a reload of other settings
/// must not cut it short), none if turned off.
fn warmup_from(
    config: &ProxyConfig,
    old: &Cluster,
    ring: &Ring,
    nodes: &[Arc<pool::Upstream>],
) -> Option<Arc<warmup::Warmup>> {
    if config.warmup.is_zero() {
        return None;
    }
    if !warmup::Warmup::needed(old.ring(), &old.nodes, ring, nodes) {
        return old.warmup().cloned();
    }
    Some(Arc::new(warmup::Warmup::new(
        old.ring().clone(),
        old.nodes.clone(),
        nodes,
        config.warmup_settle,
        config.warmup,
    )))
}

/// Whether `cluster`'s warm-up still reads `node`.
fn in_warmup(cluster: &Cluster, node: &Arc<pool::Upstream>) -> bool {
    cluster
        .warmup()
        .is_some_and(|warm| warm.previous_nodes().any(|n| Arc::ptr_eq(n, node)))
}

/// When `warm` ends, drain the previous nodes it alone was reading, unless a
/// later reload took them back (or started a warm-up that reads them).
async fn release_after_warmup(shared: Arc<ProxyShared>, warm: Arc<warmup::Warmup>) {
    tokio::time::sleep_until(warm.ends().into()).await;
    let cluster = shared.cluster();
    for node in warm.previous_nodes() {
        if !cluster.nodes.iter().any(|n| Arc::ptr_eq(n, node)) && !in_warmup(&cluster, node) {
            node.release();
        }
    }
}

/// Resolves once `shutdown` is true (never, if its sender is gone without saying so).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A proxy whose listeners are bound; `run` serves it.
pub struct Proxy {
    shared: Arc<ProxyShared>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    config: ProxyConfig,
}

impl Proxy {
    pub async fn bind(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        m::install();
        let cluster = cluster_for(&config, None)?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ProxyError::Bind { addr, source })
        };
        let listener = bind(config.listen).await?;
        let metrics = match config.metrics_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let shared = Arc::new(ProxyShared {
            generation: std::sync::atomic::AtomicU64::new(cluster.generation),
            cluster: RwLock::new(Arc::new(cluster)),
            username: RwLock::new(config.username.clone()),
            max_item_size: config.max_item_size,
            client_buffer: config.client_buffer,
            busy_poll: config
                .busy_poll
                .map(|window| Arc::new(busy_poll::BusyPoll::new(window))),
        });
        Ok(Proxy {
            shared,
            listener,
            metrics,
            config,
        })
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn shared(&self) -> Arc<ProxyShared> {
        Arc::clone(&self.shared)
    }

    /// Serve until `shutdown` turns true; then stop accepting, let sessions
    /// answer what is in flight for up to the drain timeout, and return.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, mut reload: watch::Receiver<u64>) {
        let shared = self.shared;
        let mut background = tokio::task::JoinSet::new();
        if let Some(listener) = self.metrics {
            let ready_shared = Arc::clone(&shared);
            let ready: m::Ready = Arc::new(move || ready_shared.cluster().any_up());
            let refresh_shared = Arc::clone(&shared);
            let refresh: m::Refresh = Arc::new(move || {
                for node in &refresh_shared.cluster().nodes {
                    metrics::gauge!(m::PROXY_UPSTREAM_CONNECTIONS, "node" => node.target.name.clone())
                        .set(node.open_connections() as f64);
                }
            });
            background.spawn(async move {
                if let Err(error) = m::serve(listener, refresh, ready).await {
                    tracing::error!(%error, "metrics listener failed");
                }
            });
        }
        let mut prober = tokio::spawn(shared.cluster().prober());
        // Exported at 0 from start-up, busy polling or not, warming up or not.
        metrics::counter!(m::PROXY_BUSY_POLL_MICROSECONDS_TOTAL).increment(0);
        for result in ["hit", "miss", "error"] {
            metrics::counter!(m::PROXY_WARMUP_FALLBACKS_TOTAL, "result" => result).increment(0);
        }
        for result in ["ok", "error"] {
            metrics::counter!(m::PROXY_WARMUP_CLEARS_TOTAL, "result" => result).increment(0);
        }
        for result in ["copied", "refused", "error"] {
            metrics::counter!(m::PROXY_WARMUP_COPIES_TOTAL, "result" => result).increment(0);
            metrics::counter!(m::PROXY_REPLICA_REPAIRS_TOTAL, "result" => result).increment(0);
        }
        for result in ["hit", "miss", "error"] {
            metrics::counter!(m::PROXY_REPLICA_FALLBACKS_TOTAL, "result" => result).increment(0);
        }
        m::ReplicaMetrics::get();
        if let Some(poll) = &shared.busy_poll {
            background.spawn(Arc::clone(poll).run());
        }
        let mut sessions = tokio::task::JoinSet::new();
        let config = self.config;
        let drain = drain::Drain::default();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, _peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    let stop = drain.signal();
                    metrics::counter!(m::PROXY_CLIENT_CONNECTIONS_TOTAL).increment(1);
                    metrics::gauge!(m::PROXY_CLIENT_CONNECTIONS).increment(1.0);
                    sessions.spawn(async move {
                        if let Err(error) = session::serve(stream, shared, stop).await {
                            tracing::debug!(%error, "client session ended");
                        }
                        metrics::gauge!(m::PROXY_CLIENT_CONNECTIONS).decrement(1.0);
                    });
                }
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                Ok(()) = reload.changed() => {
                    match config.reload_from.as_ref().map(|f| f()) {
                        Some(Ok(next)) => match cluster_for(&next, Some(&shared.cluster())) {
                            Ok(cluster) => {
                                let cluster = Arc::new(cluster);
                                let old = match shared.cluster.write() {
                                    Ok(mut guard) => std::mem::replace(&mut *guard, Arc::clone(&cluster)),
                                    Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), Arc::clone(&cluster)),
                                };
                                shared
                                    .generation
                                    .store(cluster.generation, std::sync::atomic::Ordering::Release);
                                if let Ok(mut user) = shared.username.write() {
                                    *user = next.username.clone();
                                }
                                prober.abort();
                                prober = tokio::spawn(Arc::clone(&cluster).prober());
                                // Nodes that are gone, or whose login changed,
                                // drain: no new request reaches them, and each
                                // of their connections ends once its requests
                                // in flight have been answered. Those a warm-up
                                // still reads drain when it ends.
                                let mut kept = 0;
                                for node in &old.nodes {
                                    if cluster.nodes.iter().any(|n| Arc::ptr_eq(n, node)) {
                                        kept += 1;
                                    } else if !in_warmup(&cluster, node) {
                                        node.release();
                                    }
                                }
                                if let Some(warm) = cluster.warmup() {
                                    background.spawn(release_after_warmup(Arc::clone(&shared), Arc::clone(warm)));
                                }
                                tracing::info!(servers = next.servers.len(), kept, "configuration reloaded");
                            }
                            Err(error) => tracing::error!(%error, "reload refused; keeping the old configuration"),
                        },
                        Some(Err(error)) => tracing::error!(%error, "reload refused; keeping the old configuration"),
                        None => tracing::warn!("nothing to reload"),
                    }
                }
                _ = stopped(&mut shutdown) => break,
            }
        }
        drop(self.listener);
        drain.start();
        tracing::info!(clients = sessions.len(), "draining");
        let drained = tokio::time::timeout(config.drain_timeout, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                clients = sessions.len(),
                "drain timeout; closing remaining clients"
            );
        }
        sessions.abort_all();
        prober.abort();
        background.abort_all();
    }
}
