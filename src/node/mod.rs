//! The storage node: `memgate node`.
//!
//! A multi-tenant, memcached-compatible server. Every connection must log in
//! (SASL PLAIN over binary, or ASCII auth over text); the login decides the
//! cache (tenant) it works in, and its credential's capabilities.
//!
//! - [`session`]: one connection: auth gate, capability checks, dispatch.
//! - [`caches`]: the caches file (tenants and credentials), validated.
//! - [`auth`]: password hashing and constant-time checks.
//! - [`tenants`]: the running caches, kept across reloads.
//! - [`tombstones`]: keys a sidecar's warm-up deleted, refusing its copies.
//! - `threads`: the threads that serve the connections.
//! - [`store`]: one cache's items: byte-budget LRU, TTL, CAS.
//! - [`counters`]: per-cache counters.
//! - [`hotkeys`]: each cache's hottest keys, on demand, sampled.
//! - [`mrc`]: per-cache miss-ratio curves (what-if memory), sampled.
//! - [`stats`]: what a node reports of its caches: `stats`, the analytics
//!   API's stats, Prometheus metrics.
//! - [`admin`]: the admin HTTP API that `memgate analytics` uses (token
//!   and/or mutual TLS); [`admin_tls`] is its TLS listener.

pub mod admin;
pub mod config;
pub use config::NodeConfig;
pub mod admin_tls;
pub mod caches;
pub mod counters;
pub mod hotkeys;
pub mod session;
pub mod stats;
pub mod store;
pub mod tenants;
mod threads;
pub mod tombstones;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::clock::unix_now;
use crate::metrics as m;
use caches::Invalid;
use caches::{CacheConfig, CachesFile, Capabilities, Credential};
use tenants::{Login, Tenants};
use threads::SessionThreads;

/// The cache id used by `--insecure-no-auth`.
pub const IMPLICIT_CACHE: &str = "default";

/// Errors starting or reloading the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Caches(#[from] caches::CachesError),
    #[error("caches: {0}")]
    InvalidCaches(#[from] Invalid),
    #[error("the caches' memory limits add up to {total} bytes, over the node's --memory-limit of {cap} bytes")]
    OverCommitted { total: u64, cap: u64 },
    #[error("--insecure-no-auth is refused: listener {0} is not loopback")]
    InsecureNotLoopback(SocketAddr),
    #[error("no caches file: give --caches FILE (or --insecure-no-auth for testing)")]
    NoCaches,
    #[error("no listener: give --listen or --tls-listen")]
    NoListener,
    #[error("the admin listener needs a token (--admin-token) or mutual TLS (--admin-ca)")]
    AdminWithoutToken,
    #[error("cannot start the session threads: {0}")]
    Threads(std::io::Error),
}

/// Settings sessions read on every connection.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    pub max_item_size: usize,
    pub auth_timeout: Duration,
    pub max_connections: usize,
    pub no_auth: bool,
    /// Whether the node has a TLS listener (`stats settings`' ssl_enabled).
    pub tls: bool,
    pub memory_limit: u64,
    /// [`NodeConfig::what_if`]
    pub what_if: bool,
    /// The session threads (`stats`' `threads`).
    pub threads: usize,
}

/// State shared by every connection of a node.
pub struct NodeShared {
    pub settings: NodeSettings,
    tenants: RwLock<Arc<Tenants>>,
    caches_path: Option<PathBuf>,
    started: Instant,
    /// Failed logins whose username matched no cache.
    anonymous_auth_failures: AtomicU64,
    /// Serializes changes of the caches (SIGHUP reload, admin updates).
    change_lock: Mutex<()>,
    /// Bumped by every applied change of the caches.
    config_version: AtomicU64,
}

/// Why an admin change of a cache's credentials was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// No cache has this id.
    #[error("no cache {0:?} on this node")]
    NoSuchCache(String),
    /// The change itself is not acceptable (the client's fault).
    #[error("{0}")]
    Rejected(String),
    /// The result breaks a rule of the caches file.
    #[error("caches: {0}")]
    Invalid(#[from] Invalid),
    /// The caches file could not be written; nothing changed.
    #[error(transparent)]
    Persist(#[from] caches::CachesError),
}

impl NodeShared {
    /// The current caches snapshot.
    pub fn tenants(&self) -> Arc<Tenants> {
        match self.tenants.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The implicit login of `--insecure-no-auth`.
    pub fn implicit_login(&self) -> Option<Login> {
        self.tenants().get(IMPLICIT_CACHE).map(|tenant| Login {
            tenant: Arc::clone(tenant),
            caps: Capabilities::ALL,
        })
    }

    pub fn count_anonymous_auth_failure(&self) {
        self.anonymous_auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Re-read the caches file. On any error the old caches stay in force.
    pub fn reload(&self) -> Result<(), NodeError> {
        let Some(path) = &self.caches_path else {
            return Ok(());
        };
        let _guard = self.change_lock.lock().unwrap_or_else(|p| p.into_inner());
        let file = CachesFile::load(path)?;
        check_commitment(&file, self.settings.memory_limit)?;
        let previous = self.tenants();
        let next = Tenants::build(&file, &self.settings, Some(&previous))?;
        self.install(next);
        Ok(())
    }

    fn install(&self, next: Tenants) {
        match self.tenants.write() {
            Ok(mut guard) => *guard = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
        self.config_version.fetch_add(1, Ordering::Relaxed);
    }

    /// Bumped by every reload and admin change: lets a client see that the
    /// caches changed.
    pub fn config_version(&self) -> u64 {
        self.config_version.load(Ordering::Relaxed)
    }

    /// Replace the credentials of cache `cache_id` with what `change`
    /// returns for the current ones. The new caches file is validated and
    /// persisted atomically (when the node has one) before it takes effect,
    /// like a SIGHUP reload: logged-in connections keep working, new logins
    /// see the new credentials. Returns the new config version.
    pub fn update_credentials(
        &self,
        cache_id: &str,
        change: impl FnOnce(&CacheConfig) -> Result<Vec<Credential>, String>,
    ) -> Result<u64, UpdateError> {
        self.update_cache(cache_id, |cache| {
            cache.credentials = change(cache)?;
            Ok(())
        })
    }

    /// Disable or enable cache `cache_id`, persisted like
    /// [`NodeShared::update_credentials`]. Enabling counts as activity, so
    /// `--disable-after` does not disable it again at once.
    pub fn set_disabled(&self, cache_id: &str, disabled: bool) -> Result<u64, UpdateError> {
        let version = self.update_cache(cache_id, |cache| {
            cache.disabled = disabled;
            Ok(())
        })?;
        if let Some(tenant) = self.tenants().get(cache_id) {
            tenant.touch(unix_now());
        }
        Ok(version)
    }

    /// Change one cache's entry of the caches file with `change`, then
    /// validate, persist and install the result.
    fn update_cache(
        &self,
        cache_id: &str,
        change: impl FnOnce(&mut CacheConfig) -> Result<(), String>,
    ) -> Result<u64, UpdateError> {
        let _guard = self.change_lock.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.tenants();
        let mut file = previous.file().clone();
        let cache = file
            .caches
            .iter_mut()
            .find(|c| c.id == cache_id)
            .ok_or_else(|| UpdateError::NoSuchCache(cache_id.to_owned()))?;
        change(cache).map_err(UpdateError::Rejected)?;
        file.validate()?;
        let next = Tenants::build(&file, &self.settings, Some(&previous))?;
        if let Some(path) = &self.caches_path {
            file.save_atomic(path)?;
        }
        self.install(next);
        Ok(self.config_version())
    }
}

/// The caches must fit in the node's memory cap.
fn check_commitment(file: &CachesFile, cap: u64) -> Result<(), NodeError> {
    let total: u64 = file.caches.iter().map(|c| c.memory_limit).sum();
    if total > cap {
        return Err(NodeError::OverCommitted { total, cap });
    }
    Ok(())
}

/// A node whose listeners are bound; `run` serves it.
pub struct Node {
    shared: Arc<NodeShared>,
    plain: Option<TcpListener>,
    tls: Option<(TcpListener, TlsAcceptor)>,
    metrics: Option<TcpListener>,
    admin: Option<(TcpListener, admin::AdminConfig)>,
    threads: Arc<SessionThreads>,
}

impl Node {
    /// Validate, load the caches and bind every listener.
    pub async fn bind(config: NodeConfig) -> Result<Node, NodeError> {
        if config.listen.is_none() && config.tls_listen.is_none() {
            return Err(NodeError::NoListener);
        }
        let file = if config.no_auth {
            for addr in config
                .listen
                .iter()
                .chain(config.tls_listen.iter().map(|(a, _)| a))
            {
                if !addr.ip().is_loopback() {
                    return Err(NodeError::InsecureNotLoopback(*addr));
                }
            }
            CachesFile {
                caches: vec![CacheConfig {
                    id: IMPLICIT_CACHE.to_string(),
                    memory_limit: config.memory_limit,
                    disabled: false,
                    credentials: Vec::new(),
                }],
            }
        } else {
            let path = config.caches_path.as_ref().ok_or(NodeError::NoCaches)?;
            let file = CachesFile::load(path)?;
            check_commitment(&file, config.memory_limit)?;
            let plain = file.plain_password_count();
            if plain > 0 {
                tracing::warn!(
                    credentials = plain,
                    "caches file stores passwords in plain text; use `memgate node hash-password`"
                );
            }
            file
        };
        let settings = NodeSettings {
            max_item_size: config.max_item_size,
            auth_timeout: config.auth_timeout,
            max_connections: config.max_connections,
            no_auth: config.no_auth,
            tls: config.tls_listen.is_some(),
            memory_limit: config.memory_limit,
            what_if: config.what_if,
            threads: config.threads.max(1),
        };
        let tenants = Tenants::build(&file, &settings, None)?;
        let shared = Arc::new(NodeShared {
            settings,
            tenants: RwLock::new(Arc::new(tenants)),
            caches_path: config.caches_path.clone(),
            started: Instant::now(),
            anonymous_auth_failures: AtomicU64::new(0),
            change_lock: Mutex::new(()),
            config_version: AtomicU64::new(1),
        });
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind { addr, source })
        };
        let plain = match config.listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let tls = match &config.tls_listen {
            Some((addr, server_config)) => Some((
                bind(*addr).await?,
                TlsAcceptor::from(Arc::clone(server_config)),
            )),
            None => None,
        };
        let metrics = match config.metrics_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let admin = match config.admin {
            Some(admin_config) => {
                let token_ok = admin_config.token.as_ref().is_some_and(|t| !t.is_empty());
                if !token_ok && admin_config.tls.is_none() {
                    return Err(NodeError::AdminWithoutToken);
                }
                Some((bind(admin_config.listen).await?, admin_config))
            }
            None => None,
        };
        let threads =
            Arc::new(SessionThreads::start(shared.settings.threads).map_err(NodeError::Threads)?);
        Ok(Node {
            shared,
            plain,
            tls,
            metrics,
            admin,
            threads,
        })
    }

    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    pub fn shared(&self) -> Arc<NodeShared> {
        Arc::clone(&self.shared)
    }

    /// Serve until `shutdown` turns true; then stop accepting and return
    /// (open connections end with the runtime).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let limit = Arc::new(Semaphore::new(self.shared.settings.max_connections));
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(listener) = self.plain {
            tasks.spawn(accept_loop(
                listener,
                None,
                Arc::clone(&self.shared),
                Arc::clone(&limit),
                Arc::clone(&self.threads),
            ));
        }
        if let Some((listener, acceptor)) = self.tls {
            tasks.spawn(accept_loop(
                listener,
                Some(acceptor),
                Arc::clone(&self.shared),
                Arc::clone(&limit),
                Arc::clone(&self.threads),
            ));
        }
        if let Some(listener) = self.metrics {
            let shared = Arc::clone(&self.shared);
            let refresh: m::Refresh = Arc::new(move || shared.refresh_metrics());
            tasks.spawn(async move {
                if let Err(error) = m::serve(listener, refresh, Arc::new(|| true)).await {
                    tracing::error!(%error, "metrics listener failed");
                }
            });
        }
        if let Some((listener, config)) = self.admin {
            let shared = Arc::clone(&self.shared);
            tasks.spawn(async move {
                let token = config.token.as_deref().filter(|t| !t.is_empty());
                if let Err(error) = admin::serve(listener, shared, token, config.tls).await {
                    tracing::error!(%error, "admin listener failed");
                }
            });
        }
        tasks.spawn(sweep_expired(Arc::clone(&self.shared)));
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        tasks.abort_all();
    }
}

/// Reclaim expired items in the background, a bounded batch per cache per
/// second, and start each cache's next what-if window when it is due.
async fn sweep_expired(shared: Arc<NodeShared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = unix_now();
        for tenant in shared.tenants().iter() {
            let reclaimed = tenant.store.reclaim_expired(now, 10_000);
            if let Some(tracker) = tenant.store.what_if() {
                tracker.rotate_if_due(now);
            }
            if reclaimed > 0 {
                tracing::trace!(cache = %tenant.id, reclaimed, "expired items reclaimed");
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<NodeShared>,
    limit: Arc<Semaphore>,
    threads: Arc<SessionThreads>,
) {
    let kind = if tls.is_some() { "tls" } else { "plain" };
    // Owning the sessions here means stopping the node (aborting this loop)
    // closes every connection too.
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        // Reap finished sessions so the set does not grow.
        while sessions.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            metrics::counter!(m::NODE_REFUSED_CONNECTIONS_TOTAL).increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        metrics::counter!(m::NODE_CONNECTIONS_TOTAL, "listener" => kind).increment(1);
        let _ = stream.set_nodelay(true);
        // The socket moves to the session thread's own reactor.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%peer, %error, "accepted socket unusable");
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let tls = tls.clone();
        sessions.spawn_on(
            async move {
                metrics::gauge!(m::NODE_OPEN_CONNECTIONS).increment(1.0);
                let result = match TcpStream::from_std(stream) {
                    Ok(stream) => serve_accepted(stream, tls, shared, peer).await,
                    Err(error) => Err(error.into()),
                };
                if let Err(error) = result {
                    let kind = match error {
                        crate::session::SessionError::Io(_) => "io",
                        crate::session::SessionError::Protocol(_) => "protocol",
                        crate::session::SessionError::AuthTimeout(_) => "auth_timeout",
                    };
                    metrics::counter!(m::NODE_CONNECTION_ERRORS_TOTAL, "kind" => kind).increment(1);
                    tracing::debug!(%peer, %error, "connection closed");
                }
                metrics::gauge!(m::NODE_OPEN_CONNECTIONS).decrement(1.0);
                drop(permit);
            },
            threads.next(),
        );
    }
}

/// One accepted connection, on its session thread: the TLS handshake if the
/// listener has TLS, then the session.
async fn serve_accepted(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    shared: Arc<NodeShared>,
    peer: SocketAddr,
) -> Result<(), crate::session::SessionError> {
    let Some(acceptor) = tls else {
        return session::serve(stream, shared, peer.ip()).await;
    };
    let timeout = shared.settings.auth_timeout;
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => session::serve(tls_stream, shared, peer.ip()).await,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            metrics::counter!(m::NODE_CONNECTION_ERRORS_TOTAL, "kind" => "tls").increment(1);
            Ok(())
        }
        Err(_) => {
            metrics::counter!(m::NODE_CONNECTION_ERRORS_TOTAL, "kind" => "tls").increment(1);
            Ok(())
        }
    }
}

/// memcached's answer when it is out of connections, then close.
async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"SERVER_ERROR too many open connections\r\n")
        .await;
    let _ = stream.shutdown().await;
}
