//! `memgate analytics`: the cache owner's HTTP API across every node.
//!
//! It holds no credentials of its own: every API request's basic-auth
//! credential is checked by the nodes (`POST /admin/login` on their admin
//! endpoints), and credential changes are written to every node that hosts
//! the cache (`PUT /admin/caches/{id}/credentials`), each of which persists
//! its caches file. A node that is down gets the change later: it is kept in
//! the SQLite database and retried, in order, by the background loop.
//!
//! - [`api`]: the documented `/api/v1` routes.
//! - [`ops`]: the owner's operations, shared by the API and the dashboard.
//! - [`dashboard`]: the HTML dashboard at `/caches/<cache_id>`.
//! - [`history`]: the SQLite database (history samples, pending changes)
//!   and the sampling loop.
//! - [`http`]: the HTTP/1.1 client (on hyper) used to reach the nodes.
//! - [`inactivity`]: `--disable-after`, disabling caches nobody uses.

pub mod api;
pub mod dashboard;
pub mod history;
pub mod http;
pub mod inactivity;
pub mod ops;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin_view::{CacheView, CachesView, CredentialUpdate, CredentialView, LoginView};
use crate::metrics as m;
use history::Db;

/// How long one call to a node's admin API may take.
const NODE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a successful login is remembered (so an API client does not pay
/// for an argon2 verification on a node per request). Every credential
/// change made here forgets them all at once.
const LOGIN_TTL: Duration = Duration::from_secs(30);

/// At most this many remembered logins; beyond it they are all forgotten.
const LOGIN_CACHE_MAX: usize = 4096;

/// Successful logins by a keyed digest of username and password (the
/// password itself is never kept).
#[derive(Default)]
struct LoginCache {
    entries: std::sync::Mutex<LoginEntries>,
}

/// The remembered logins and the generation `clear` bumps, so a login
/// checked before a change cannot be remembered after it.
#[derive(Default)]
struct LoginEntries {
    generation: u64,
    by_key: std::collections::HashMap<[u8; 32], (std::time::Instant, LoginView)>,
}

impl LoginCache {
    fn key(username: &str, password: &str) -> [u8; 32] {
        let mut data = Vec::with_capacity(username.len() + password.len() + 1);
        data.extend_from_slice(username.as_bytes());
        data.push(0);
        data.extend_from_slice(password.as_bytes());
        crate::auth::keyed_digest(&data)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoginEntries> {
        crate::sync::lock(&self.entries)
    }

    /// A remembered login, or the generation to hand to `put`.
    fn get(&self, key: &[u8; 32]) -> Result<LoginView, u64> {
        let entries = self.lock();
        entries
            .by_key
            .get(key)
            .filter(|(at, _)| at.elapsed() < LOGIN_TTL)
            .map(|(_, view)| view.clone())
            .ok_or(entries.generation)
    }

    fn put(&self, key: [u8; 32], view: LoginView, generation: u64) {
        let mut entries = self.lock();
        if entries.generation != generation {
            return;
        }
        if entries.by_key.len() >= LOGIN_CACHE_MAX {
            entries.by_key.clear();
        }
        entries
            .by_key
            .insert(key, (std::time::Instant::now(), view));
    }

    fn clear(&self) {
        let mut entries = self.lock();
        entries.generation += 1;
        entries.by_key.clear();
    }
}

/// One node's admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    /// How the API names the node (the `host:port` key of `stats`).
    pub label: String,
    /// The admin endpoint, `host:port`.
    pub addr: String,
}

/// Parse `host:port` or `name=host:port` entries, comma-separated. On error,
/// the bad entry.
pub fn parse_nodes(list: &str) -> Result<Vec<NodeEntry>, String> {
    let mut out: Vec<NodeEntry> = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (label, addr) = match entry.split_once('=') {
            Some((l, a)) => (l.trim(), a.trim()),
            None => (entry, entry),
        };
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if label.is_empty() || !port_ok || out.iter().any(|n| n.label == label) {
            return Err(entry.to_owned());
        }
        out.push(NodeEntry {
            label: label.to_owned(),
            addr: addr.to_owned(),
        });
    }
    if out.is_empty() {
        return Err(list.to_owned());
    }
    Ok(out)
}

/// Everything `memgate analytics` needs, validated.
#[derive(Clone)]
pub struct AnalyticsConfig {
    pub nodes: Vec<NodeEntry>,
    /// The nodes' admin token (never logged); None with mutual TLS only.
    pub admin_token: Option<String>,
    /// Reach the admin endpoints over TLS with this config (its roots, and
    /// the client certificate for the nodes' mutual TLS).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Disable caches idle (no logins, no commands on any node) this long.
    pub disable_after: Option<Duration>,
    pub listen: SocketAddr,
    /// The SQLite file; None keeps everything in memory (tests).
    pub db: Option<PathBuf>,
    pub sample_interval: Duration,
    pub retention: Duration,
    pub metrics_listen: Option<SocketAddr>,
}

/// Errors starting the analytics service.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("history database: {0}")]
    Db(#[from] rusqlite::Error),
}

/// A node's admin API could not be used: unreachable, timed out, 5xx, or an
/// answer that made no sense.
#[derive(Debug, Clone, thiserror::Error)]
#[error("node {node}: {reason}")]
pub struct NodeDown {
    pub node: String,
    pub reason: String,
}

/// A credential change, replayed on each node that hosts the cache. Each is
/// idempotent on a node's current list, so a retry is harmless. (Debug
/// shows the password hash: do not log it.)
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Add (or replace) a credential; the password only as an argon2id hash.
    Create {
        cache_id: String,
        username: String,
        password_hash: String,
        write: bool,
        flush: bool,
        api: bool,
    },
    /// Set a credential's capabilities.
    Update {
        cache_id: String,
        username: String,
        write: bool,
        flush: bool,
        api: bool,
    },
    /// Make a credential the only primary one.
    Promote { cache_id: String, username: String },
    /// Remove a credential (never the primary).
    Delete { cache_id: String, username: String },
    /// Disable the cache (`--disable-after`) or enable it again.
    SetDisabled { cache_id: String, disabled: bool },
}

impl Change {
    pub fn cache_id(&self) -> &str {
        match self {
            Change::Create { cache_id, .. }
            | Change::Update { cache_id, .. }
            | Change::Promote { cache_id, .. }
            | Change::Delete { cache_id, .. }
            | Change::SetDisabled { cache_id, .. } => cache_id,
        }
    }

    /// The node's new credential list after this change (None: the change
    /// is not about credentials); secrets of credentials that are kept are
    /// left to the node.
    fn apply(&self, current: &[CredentialView]) -> Option<Vec<CredentialUpdate>> {
        let keep = |c: &CredentialView| CredentialUpdate {
            username: c.username.clone(),
            password: None,
            password_hash: None,
            primary: c.primary,
            write: c.write,
            flush: c.flush,
            api: c.api,
        };
        let mut list: Vec<CredentialUpdate> = current.iter().map(keep).collect();
        match self {
            Change::Create {
                username,
                password_hash,
                write,
                flush,
                api,
                ..
            } => {
                let primary =
                    list.iter().any(|c| &c.username == username && c.primary) || list.is_empty();
                list.retain(|c| &c.username != username);
                list.push(CredentialUpdate {
                    username: username.clone(),
                    password: None,
                    password_hash: Some(password_hash.clone()),
                    primary,
                    write: *write,
                    flush: *flush,
                    api: *api,
                });
            }
            Change::Update {
                username,
                write,
                flush,
                api,
                ..
            } => {
                for c in list.iter_mut().filter(|c| &c.username == username) {
                    (c.write, c.flush, c.api) = (*write, *flush, *api);
                }
            }
            Change::Promote { username, .. } => {
                if list.iter().any(|c| &c.username == username) {
                    for c in &mut list {
                        c.primary = &c.username == username;
                    }
                }
            }
            Change::Delete { username, .. } => {
                list.retain(|c| &c.username != username || c.primary);
            }
            Change::SetDisabled { .. } => return None,
        }
        Some(list)
    }
}

/// What happened when a change was sent to a node.
enum Applied {
    /// The node has it (or does not host the cache).
    Done,
    /// The node refused it (400): it can never apply; dropped.
    Refused(String),
}

/// State shared by the API handlers and the background loop.
pub struct Service {
    pub(crate) nodes: Vec<NodeEntry>,
    token: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) disable_after: Option<Duration>,
    pub(crate) db: Db,
    /// Serializes credential changes and their retries, so each node sees
    /// them in order.
    changes: tokio::sync::Mutex<()>,
    pub(crate) sample_interval: Duration,
    pub(crate) retention: Duration,
    logins: LoginCache,
}

impl Service {
    /// Call a node's admin API: the status and the JSON body (Null if empty).
    /// Connection failures, timeouts and 5xx are [`NodeDown`].
    pub(crate) async fn call(
        &self,
        node: &NodeEntry,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), NodeDown> {
        let down = |reason: String| {
            metrics::counter!(m::ANALYTICS_NODE_ERRORS_TOTAL, "node" => node.label.clone())
                .increment(1);
            NodeDown {
                node: node.label.clone(),
                reason,
            }
        };
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let payload = body.map(|b| b.to_string());
        let response = http::request(
            &node.addr,
            self.tls.as_ref(),
            method,
            path,
            &headers,
            payload.as_deref().map(str::as_bytes),
            NODE_TIMEOUT,
        )
        .await
        .map_err(|e| down(e.to_string()))?;
        if response.status >= 500 || response.status == 401 {
            // 401: a token mismatch is an operator error; treat the node as unusable.
            return Err(down(format!("HTTP {}", response.status)));
        }
        let value = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body)
                .map_err(|e| down(format!("bad JSON from node: {e}")))?
        };
        Ok((response.status, value))
    }

    /// `GET /admin/caches` of one node.
    pub(crate) async fn caches_of(&self, node: &NodeEntry) -> Result<CachesView, NodeDown> {
        let (status, value) = self.call(node, "GET", "/admin/caches", None).await?;
        if status != 200 {
            return Err(NodeDown {
                node: node.label.clone(),
                reason: format!("HTTP {status}"),
            });
        }
        serde_json::from_value(value).map_err(|e| NodeDown {
            node: node.label.clone(),
            reason: format!("bad caches list: {e}"),
        })
    }

    /// Check a basic-auth credential with the nodes. `Ok(None)`: refused.
    /// `Err`: no node answered.
    ///
    /// Nodes that still wait for credential changes may be stale (they could
    /// still accept a deleted credential), so they are asked only when no
    /// up-to-date node answers.
    pub(crate) async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<LoginView>, Vec<NodeDown>> {
        let key = LoginCache::key(username, password);
        let generation = match self.logins.get(&key) {
            Ok(view) => return Ok(Some(view)),
            Err(generation) => generation,
        };
        let body = serde_json::json!({ "username": username, "password": password });
        let pending = self.db.pending_nodes().unwrap_or_default();
        let (fresh, stale): (Vec<&NodeEntry>, Vec<&NodeEntry>) =
            self.nodes.iter().partition(|n| !pending.contains(&n.label));
        let mut down = Vec::new();
        for group in [fresh, stale] {
            let mut answered = false;
            for node in group {
                match self.call(node, "POST", "/admin/login", Some(&body)).await {
                    Ok((200, value)) => {
                        if let Ok(view) = serde_json::from_value::<LoginView>(value) {
                            self.logins.put(key, view.clone(), generation);
                            return Ok(Some(view));
                        }
                    }
                    Ok(_) => answered = true,
                    Err(e) => down.push(e),
                }
            }
            if answered {
                return Ok(None);
            }
        }
        Err(down)
    }

    /// The cache as an up-to-date node sees it (one with no pending
    /// changes). `Ok(None)`: no node hosts it. `Err`: the nodes that could
    /// not be asked.
    pub(crate) async fn reference_cache(
        &self,
        cache_id: &str,
    ) -> Result<Option<CacheView>, Vec<NodeDown>> {
        let pending = self.db.pending_nodes().unwrap_or_default();
        let mut down = Vec::new();
        for node in self.nodes.iter().filter(|n| !pending.contains(&n.label)) {
            match self.caches_of(node).await {
                Ok(view) => {
                    if let Some(cache) = view.caches.into_iter().find(|c| c.id == cache_id) {
                        return Ok(Some(cache));
                    }
                }
                Err(e) => down.push(e),
            }
        }
        // Nodes still behind cannot be trusted to say what the cache is.
        let configured = |p: &String| self.nodes.iter().any(|n| &n.label == p);
        down.extend(pending.into_iter().filter(configured).map(|node| NodeDown {
            node,
            reason: "has changes not applied yet".into(),
        }));
        if down.is_empty() {
            Ok(None)
        } else {
            Err(down)
        }
    }

    /// Send one change to one node: read its list, apply, write it back
    /// (or set the disabled flag).
    async fn send_change(&self, node: &NodeEntry, change: &Change) -> Result<Applied, NodeDown> {
        let (path, body) = if let Change::SetDisabled { disabled, .. } = change {
            (
                format!("/admin/caches/{}/disabled", change.cache_id()),
                serde_json::json!({ "disabled": disabled }),
            )
        } else {
            let view = self.caches_of(node).await?;
            let Some(cache) = view.caches.iter().find(|c| c.id == change.cache_id()) else {
                return Ok(Applied::Done);
            };
            (
                format!("/admin/caches/{}/credentials", change.cache_id()),
                serde_json::json!({ "credentials": change.apply(&cache.credentials) }),
            )
        };
        match self.call(node, "PUT", &path, Some(&body)).await? {
            (200, _) | (404, _) => Ok(Applied::Done),
            (status, value) => Ok(Applied::Refused(format!(
                "HTTP {status}: {}",
                value.get("error").and_then(Value::as_str).unwrap_or("")
            ))),
        }
    }

    /// Send a node its pending changes, in order, until one fails. Returns
    /// whether none is left. The caller holds `changes`.
    async fn drain_node(&self, node: &NodeEntry) -> bool {
        let queued = match self.db.pending_for(&node.label) {
            Ok(q) => q,
            Err(error) => {
                tracing::error!(%error, "cannot read pending changes");
                return false;
            }
        };
        if !queued.is_empty() {
            self.logins.clear();
        }
        for (id, change) in queued {
            match self.send_change(node, &change).await {
                Ok(Applied::Done) => {
                    tracing::info!(node = %node.label, cache = %change.cache_id(), "pending change applied");
                }
                Ok(Applied::Refused(reason)) => {
                    tracing::warn!(node = %node.label, cache = %change.cache_id(), %reason, "pending change refused; dropped");
                }
                Err(_) => {
                    self.publish_pending();
                    return false;
                }
            }
            if let Err(error) = self.db.pending_remove(id) {
                tracing::error!(%error, "cannot remove a pending change");
                return false;
            }
        }
        self.publish_pending();
        true
    }

    /// Apply `change` on every node; nodes that are down (or still behind)
    /// get it queued. Returns the nodes that have not applied it yet; or,
    /// if some node refused it (it breaks a rule there, e.g. a username
    /// another cache of that node uses), those nodes: the others still
    /// applied it.
    pub(crate) async fn apply_everywhere(
        &self,
        change: Change,
    ) -> Result<Vec<String>, Vec<String>> {
        let _order = self.changes.lock().await;
        self.logins.clear();
        let mut behind = Vec::new();
        let mut refused = Vec::new();
        for node in &self.nodes {
            let up_to_date = self.drain_node(node).await;
            let result = if up_to_date {
                self.send_change(node, &change).await
            } else {
                Err(NodeDown {
                    node: node.label.clone(),
                    reason: "has pending changes".into(),
                })
            };
            match result {
                Ok(Applied::Done) => {}
                Ok(Applied::Refused(reason)) => {
                    tracing::error!(node = %node.label, cache = %change.cache_id(), %reason, "a node refused a credential change");
                    refused.push(node.label.clone());
                }
                Err(_) => {
                    if let Err(error) = self.db.pending_add(&node.label, &change) {
                        tracing::error!(%error, "cannot queue a change");
                    }
                    behind.push(node.label.clone());
                }
            }
        }
        self.publish_pending();
        self.logins.clear();
        if refused.is_empty() {
            Ok(behind)
        } else {
            Err(refused)
        }
    }

    /// Retry every node's pending changes (the background loop).
    pub(crate) async fn retry_pending(&self) {
        let pending = self.db.pending_nodes().unwrap_or_default();
        if pending.is_empty() {
            return;
        }
        let _order = self.changes.lock().await;
        for node in self.nodes.iter().filter(|n| pending.contains(&n.label)) {
            self.drain_node(node).await;
        }
    }

    /// Nodes with changes not applied yet.
    pub fn pending_nodes(&self) -> HashSet<String> {
        self.db.pending_nodes().unwrap_or_default()
    }

    fn publish_pending(&self) {
        for node in &self.nodes {
            let n = self.db.pending_count(&node.label).unwrap_or(0);
            metrics::gauge!(m::ANALYTICS_PENDING_CHANGES, "node" => node.label.clone())
                .set(n as f64);
        }
    }
}

/// The analytics service, bound and ready to run.
pub struct Analytics {
    service: Arc<Service>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
}

impl Analytics {
    /// Open the database and bind the listeners.
    pub async fn bind(config: AnalyticsConfig) -> Result<Analytics, AnalyticsError> {
        let db = match &config.db {
            Some(path) => Db::open(path)?,
            None => Db::in_memory()?,
        };
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| AnalyticsError::Bind { addr, source })
        };
        let listener = bind(config.listen).await?;
        let metrics = match config.metrics_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        m::install();
        Ok(Analytics {
            service: Arc::new(Service {
                nodes: config.nodes,
                token: config.admin_token,
                tls: config.tls,
                disable_after: config.disable_after,
                db,
                changes: tokio::sync::Mutex::new(()),
                sample_interval: config.sample_interval,
                retention: config.retention,
                logins: LoginCache::default(),
            }),
            listener,
            metrics,
        })
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn service(&self) -> Arc<Service> {
        Arc::clone(&self.service)
    }

    /// Serve the API and run the sampling loop until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        let app = api::router(Arc::clone(&self.service))
            .merge(dashboard::router(Arc::clone(&self.service)))
            .layer(axum::middleware::from_fn(api::observe));
        let listener = self.listener;
        tasks.spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "analytics listener failed");
            }
        });
        if let Some(listener) = self.metrics {
            tasks.spawn(async move {
                if let Err(error) = m::serve(listener, Arc::new(|| {}), Arc::new(|| true)).await {
                    tracing::error!(%error, "metrics listener failed");
                }
            });
        }
        tasks.spawn(history::background(Arc::clone(&self.service)));
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        tasks.abort_all();
    }
}

#[cfg(test)]
mod tests;
