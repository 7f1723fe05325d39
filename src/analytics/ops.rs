//! What a cache owner can do, shared by the JSON API ([`super::api`]) and
//! the HTML dashboard ([`super::dashboard`]): each checks the caller the
//! same way and fails with the same status codes and messages, so the two
//! front ends cannot drift apart.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::distributions::{Alphanumeric, DistString};
use serde_json::{Map, Value};

use super::{Change, NodeDown, NodeEntry, Service};
use crate::admin_view::{CacheView, CredentialView, HotKeysView, LoginView};
use crate::mrc::WhatIf;

pub const NOT_AUTHORIZED: &str = "You are not authorized to perform this action.";
pub const NO_CACHE: &str = "No cache found.";
pub const NO_CREDENTIAL: &str = "No credential found.";
pub const PRIMARY_NOT_DELETABLE: &str = "The primary credential cannot be deleted.";

/// A refusal or failure: status and the documented message.
#[derive(Debug)]
pub struct OpError(pub StatusCode, pub String);

impl IntoResponse for OpError {
    /// The API's form: the message as plain text.
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.1,
        )
            .into_response()
    }
}

pub fn forbidden() -> OpError {
    OpError(StatusCode::FORBIDDEN, NOT_AUTHORIZED.into())
}

pub fn server_error(down: &[NodeDown]) -> OpError {
    let nodes: Vec<&str> = down.iter().map(|d| d.node.as_str()).collect();
    for d in down {
        tracing::warn!(node = %d.node, reason = %d.reason, "node unavailable");
    }
    if nodes.is_empty() {
        OpError(StatusCode::INTERNAL_SERVER_ERROR, "Server error".into())
    } else {
        OpError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Server error: {}", nodes.join(",")),
        )
    }
}

/// The username and password of an HTTP basic `Authorization` header.
pub fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

/// The caller's credential, checked by the nodes; it must have `api`, and
/// belong to `cache_id` when one is given.
pub async fn authorize(
    service: &Service,
    headers: &HeaderMap,
    cache_id: Option<&str>,
) -> Result<LoginView, OpError> {
    let (user, pass) = basic_auth(headers).ok_or_else(forbidden)?;
    let login = match service.login(&user, &pass).await {
        Ok(Some(login)) => login,
        Ok(None) => return Err(forbidden()),
        Err(down) => return Err(server_error(&down)),
    };
    if !login.api || cache_id.is_some_and(|id| id != login.cache_id) {
        return Err(forbidden());
    }
    Ok(login)
}

/// The cache's stats on every node that hosts it, keyed by node label.
pub async fn node_stats(service: &Service, cache_id: &str) -> Result<Map<String, Value>, OpError> {
    let mut out = Map::new();
    let mut down = Vec::new();
    let path = format!("/admin/caches/{cache_id}/stats");
    for node in &service.nodes {
        match service.call(node, "GET", &path, None).await {
            Ok((200, value)) => {
                out.insert(node.label.clone(), value);
            }
            Ok(_) => {} // this node does not host the cache
            Err(e) => down.push(e),
        }
    }
    if !down.is_empty() {
        return Err(server_error(&down));
    }
    Ok(out)
}

/// One node's answer for a cache's what-if curve.
#[derive(Debug)]
pub enum NodeWhatIf {
    /// The node does not host the cache.
    Absent,
    /// The node hosts it with its tracker off (`memgate node --what-if off`).
    Off,
    Curve(WhatIf),
}

/// One node's what-if curve for the cache.
pub async fn node_what_if(
    service: &Service,
    node: &NodeEntry,
    cache_id: &str,
) -> Result<NodeWhatIf, NodeDown> {
    let path = format!("/admin/caches/{cache_id}/whatif");
    match service.call(node, "GET", &path, None).await? {
        // `{"tracking": false, "what_if": null}`: no curve to read.
        (200, mut value) => Ok(serde_json::from_value(value["what_if"].take())
            .map_or(NodeWhatIf::Off, NodeWhatIf::Curve)),
        _ => Ok(NodeWhatIf::Absent),
    }
}

/// A cache's what-if curves across its nodes.
#[derive(Debug, Default)]
pub struct WhatIfs {
    /// The curve merged over the nodes that track the cache; None when
    /// none does.
    pub merged: Option<WhatIf>,
    /// Each of those nodes' own curve, by node label.
    pub servers: Map<String, Value>,
    /// The nodes that host the cache with their tracker off, by label: the
    /// merged curve leaves their share of the cache out.
    pub tracking_off: Vec<String>,
}

/// The cache's what-if curve across its nodes.
pub async fn what_if(service: &Service, cache_id: &str) -> Result<WhatIfs, OpError> {
    let mut parts = Vec::new();
    let mut out = WhatIfs::default();
    let mut down = Vec::new();
    for node in &service.nodes {
        match node_what_if(service, node, cache_id).await {
            Ok(NodeWhatIf::Curve(w)) => {
                out.servers.insert(
                    node.label.clone(),
                    serde_json::to_value(&w).unwrap_or_default(),
                );
                parts.push(w);
            }
            Ok(NodeWhatIf::Off) => out.tracking_off.push(node.label.clone()),
            Ok(NodeWhatIf::Absent) => {}
            Err(e) => down.push(e),
        }
    }
    if !down.is_empty() {
        return Err(server_error(&down));
    }
    out.merged = (!parts.is_empty()).then(|| WhatIf::merged(&parts));
    Ok(out)
}

/// One key of a cache's [`HotKeys`], with the node that holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct HotKey {
    /// As `admin_view::escape_key` writes it: any byte is printable here,
    /// but it is still the tenant's text and must be escaped for HTML.
    pub key: String,
    pub count: u64,
    pub error: u64,
    /// Of the cache's operations (or bytes) on every node in the window.
    pub share: f64,
    pub server: String,
}

/// A cache's heaviest keys across its nodes (each key lives on one node,
/// so the lists are joined, not added).
#[derive(Debug, Default)]
pub struct HotKeys {
    pub ops: u64,
    pub bytes: u64,
    pub by_ops: Vec<HotKey>,
    pub by_bytes: Vec<HotKey>,
    /// Each node's own answer, by node label.
    pub servers: Vec<(String, HotKeysView)>,
}

impl HotKeys {
    /// Whether some node has a window with traffic in it yet (the first
    /// question only starts the nodes' trackers).
    pub fn warming_up(&self) -> bool {
        self.servers.iter().all(|(_, v)| v.ops == 0)
    }
}

/// The cache's heaviest keys across its nodes, at most `limit` of each kind.
/// Asking starts the nodes' trackers, which then run while asked.
pub async fn hot_keys(service: &Service, cache_id: &str, limit: usize) -> Result<HotKeys, OpError> {
    let mut out = HotKeys::default();
    let mut down = Vec::new();
    let path = format!("/admin/caches/{cache_id}/hotkeys?keys=plain&limit={limit}");
    for node in &service.nodes {
        match service.call(node, "GET", &path, None).await {
            Ok((200, value)) => match serde_json::from_value::<HotKeysView>(value) {
                Ok(view) => out.servers.push((node.label.clone(), view)),
                Err(_) => down.push(super::NodeDown {
                    node: node.label.clone(),
                    reason: "hot keys answer does not parse".into(),
                }),
            },
            Ok(_) => {} // this node does not host the cache
            Err(e) => down.push(e),
        }
    }
    if !down.is_empty() {
        return Err(server_error(&down));
    }
    out.ops = out.servers.iter().map(|(_, v)| v.ops).sum();
    out.bytes = out.servers.iter().map(|(_, v)| v.bytes).sum();
    let join = |pick: fn(&HotKeysView) -> &Vec<crate::admin_view::HotKeyView>, total: u64| {
        let mut keys: Vec<HotKey> = out
            .servers
            .iter()
            .flat_map(|(server, view)| {
                pick(view).iter().map(move |k| HotKey {
                    key: k.key.clone(),
                    count: k.count,
                    error: k.error,
                    share: if total == 0 {
                        0.0
                    } else {
                        k.count as f64 / total as f64
                    },
                    server: server.clone(),
                })
            })
            .collect();
        keys.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        keys.truncate(limit);
        keys
    };
    out.by_ops = join(|v| &v.by_ops, out.ops);
    out.by_bytes = join(|v| &v.by_bytes, out.bytes);
    Ok(out)
}

/// Flush the cache on every node; the caller needs `flush`.
pub async fn flush(service: &Service, caller: &LoginView, cache_id: &str) -> Result<(), OpError> {
    if !caller.flush {
        return Err(forbidden());
    }
    let mut down = Vec::new();
    let path = format!("/admin/caches/{cache_id}/flush");
    for node in &service.nodes {
        if let Err(e) = service.call(node, "POST", &path, None).await {
            down.push(e);
        }
    }
    if !down.is_empty() {
        return Err(server_error(&down));
    }
    tracing::info!(cache = %cache_id, username = %caller.username, "cache flushed");
    Ok(())
}

/// The cache as an up-to-date node has it.
pub async fn current_cache(service: &Service, cache_id: &str) -> Result<CacheView, OpError> {
    match service.reference_cache(cache_id).await {
        Ok(Some(cache)) => Ok(cache),
        Ok(None) => Err(OpError(StatusCode::NOT_FOUND, NO_CACHE.into())),
        Err(down) => Err(server_error(&down)),
    }
}

async fn find_credential(
    service: &Service,
    cache_id: &str,
    cred_id: &str,
) -> Result<CredentialView, OpError> {
    current_cache(service, cache_id)
        .await?
        .credentials
        .into_iter()
        .find(|c| c.username == cred_id)
        .ok_or_else(|| OpError(StatusCode::NOT_FOUND, NO_CREDENTIAL.into()))
}

/// Apply a change on every node: the nodes that have not applied it yet.
async fn apply(service: &Service, change: Change) -> Result<Vec<String>, OpError> {
    service.apply_everywhere(change).await.map_err(|refused| {
        OpError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Server error: {}", refused.join(",")),
        )
    })
}

/// A credential just created: its password is shown this once.
pub struct Created {
    pub view: CredentialView,
    pub password: String,
    pub behind: Vec<String>,
}

/// Create a credential with a random username and password and every
/// capability.
pub async fn create_credential(service: &Service, cache_id: &str) -> Result<Created, OpError> {
    // At least one up-to-date node must be there to take it.
    current_cache(service, cache_id).await?;
    let (username, password) = {
        let mut rng = rand::thread_rng();
        (
            Alphanumeric.sample_string(&mut rng, 12),
            Alphanumeric.sample_string(&mut rng, 32),
        )
    };
    let to_hash = password.clone();
    let password_hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&to_hash))
        .await
        .map_err(|_| server_error(&[]))?
        .map_err(|_| server_error(&[]))?;
    let change = Change::Create {
        cache_id: cache_id.to_owned(),
        username: username.clone(),
        password_hash,
        write: true,
        flush: true,
        api: true,
    };
    let behind = apply(service, change).await?;
    tracing::info!(cache = %cache_id, %username, "credential created");
    Ok(Created {
        view: CredentialView {
            username,
            primary: false,
            write: true,
            flush: true,
            api: true,
        },
        password,
        behind,
    })
}

/// Capabilities to set; `None` keeps the current one.
#[derive(Debug, Clone, Copy, Default)]
pub struct CapabilityChange {
    pub write: Option<bool>,
    pub flush: Option<bool>,
    pub api: Option<bool>,
}

/// Change a credential's capabilities: the credential as it now is.
pub async fn update_credential(
    service: &Service,
    cache_id: &str,
    cred_id: &str,
    caps: CapabilityChange,
) -> Result<(CredentialView, Vec<String>), OpError> {
    let current = find_credential(service, cache_id, cred_id).await?;
    let next = CredentialView {
        flush: caps.flush.unwrap_or(current.flush),
        write: caps.write.unwrap_or(current.write),
        api: caps.api.unwrap_or(current.api),
        ..current
    };
    let behind = apply(
        service,
        Change::Update {
            cache_id: cache_id.to_owned(),
            username: cred_id.to_owned(),
            write: next.write,
            flush: next.flush,
            api: next.api,
        },
    )
    .await?;
    tracing::info!(cache = %cache_id, username = %cred_id, "credential capabilities changed");
    Ok((next, behind))
}

/// Make a credential the primary one.
pub async fn promote_credential(
    service: &Service,
    cache_id: &str,
    cred_id: &str,
) -> Result<(CredentialView, Vec<String>), OpError> {
    let current = find_credential(service, cache_id, cred_id).await?;
    let behind = apply(
        service,
        Change::Promote {
            cache_id: cache_id.to_owned(),
            username: cred_id.to_owned(),
        },
    )
    .await?;
    tracing::info!(cache = %cache_id, username = %cred_id, "credential promoted to primary");
    Ok((
        CredentialView {
            primary: true,
            ..current
        },
        behind,
    ))
}

/// Delete a credential that is not the primary one.
pub async fn delete_credential(
    service: &Service,
    cache_id: &str,
    cred_id: &str,
) -> Result<Vec<String>, OpError> {
    let current = find_credential(service, cache_id, cred_id).await?;
    if current.primary {
        return Err(OpError(StatusCode::FORBIDDEN, PRIMARY_NOT_DELETABLE.into()));
    }
    let behind = apply(
        service,
        Change::Delete {
            cache_id: cache_id.to_owned(),
            username: cred_id.to_owned(),
        },
    )
    .await?;
    tracing::info!(cache = %cache_id, username = %cred_id, "credential deleted");
    Ok(behind)
}

/// Enable a disabled cache again on every node.
pub async fn enable(service: &Service, cache_id: &str) -> Result<Vec<String>, OpError> {
    current_cache(service, cache_id).await?;
    let behind = apply(
        service,
        Change::SetDisabled {
            cache_id: cache_id.to_owned(),
            disabled: false,
        },
    )
    .await?;
    tracing::info!(cache = %cache_id, "cache enabled");
    Ok(behind)
}
