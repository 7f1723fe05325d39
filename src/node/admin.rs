//! The node's admin HTTP API, for `memgate analytics`.
//!
//! Off unless `--admin-listen` is given, and then never open: it wants a
//! bearer token (`--admin-token`, compared in constant time), mutual TLS
//! (`--admin-ca`: a client certificate that chains to the cluster CA), or
//! both. Every route answers JSON.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /admin/caches` | `{"version", "caches": [{"id", "memory_limit", "disabled", "credentials": [{"username", "primary", "write", "flush", "api"}]}]}`, never a password or hash |
//! | `GET /admin/caches/{id}/stats` | the cache's stats ([`super::stats::API_STATS`]) as an object |
//! | `GET /admin/caches/{id}/whatif` | `{"tracking": true, "what_if": {...}}`: the cache's predicted hit rate at other sizes ([`WhatIf`]); `{"tracking": false, "what_if": null}` when the node runs with `--what-if off` |
//! | `GET /admin/caches/{id}/hotkeys` (`?keys=hashed\|plain&limit=20`) | the cache's heaviest keys here over the last 5–10 s, by operations and by bytes ([`HotKeysView`]); keys hashed unless `keys=plain` |
//! | `POST /admin/caches/{id}/flush` | `flush_all` on the cache |
//! | `PUT /admin/caches/{id}/credentials` | replace the credential list (below); persisted atomically, then in force |
//! | `PUT /admin/caches/{id}/disabled` | `{"disabled": bool}`: disable or enable the cache; persisted the same way |
//! | `POST /admin/login` | `{"username", "password"}` checked against this node's caches: `{"cache_id", "username", "primary", "write", "flush", "api", "disabled"}`, or 403 |
//!
//! Hot keys are tracked from the first question about a cache's on, for as
//! long as someone keeps asking (`node::hotkeys`), so the first answer is
//! empty. An operator's view shows each key as a keyed hash under a secret
//! the node makes at start-up: stable while the node runs, useless for
//! guessing keys. `keys=plain` is for `memgate analytics`, which shows a
//! cache's keys to its owner only.
//!
//! Each cache in `GET /admin/caches` also says `last_active`: the unix
//! second of its last login or command on this node (or of the node's start).
//!
//! The body of `PUT …/credentials` is `{"credentials": [{"username",
//! "password" | "password_hash" | neither, "primary", "write", "flush",
//! "api"}]}`. A credential with neither keeps the secret it has now (so the
//! caller never needs the hashes); a new username without one is refused.
//! Errors: 400 (the change breaks a rule), 401 (no or wrong token), 404 (no such cache),
//! 500 (the caches file could not be written; nothing changed).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use super::caches::{Capabilities, Credential};
use super::hotkeys::{HotKey, CAPACITY};
use super::{NodeShared, UpdateError};
use crate::admin_view::{
    escape_key, CacheView, CachesView, CredentialView, CredentialsBody, DisabledBody, HotKeyView,
    HotKeysView, LoginBody, LoginView, KEYS_HASHED, KEYS_PLAIN,
};
use crate::auth::Secret;
use crate::clock::{unix_now, unix_now_ms};
use crate::mrc::WhatIf;
use crate::protocol::request::Command;

/// Where the admin API listens and what it wants from a caller.
#[derive(Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The shared bearer token (never logged); None only with `tls`.
    pub token: Option<String>,
    /// TLS for the listener; built to require a client certificate from
    /// the cluster CA (mutual TLS).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

#[derive(Clone)]
struct AdminState {
    shared: Arc<NodeShared>,
    /// None: no token wanted (mutual TLS guards the listener).
    token_digest: Option<[u8; 32]>,
    /// Keys the operator's view of hot keys ([`KEYS_HASHED`]); made at
    /// start-up and never shown.
    key_hasher: Arc<ring::hmac::Key>,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether `presented` is the token, in constant time (both sides are
/// hashed first, so lengths do not leak either).
pub fn token_matches(expected_digest: &[u8; 32], presented: &[u8]) -> bool {
    bool::from(digest(presented).ct_eq(expected_digest))
}

/// The admin router for `shared`, protected by `token` when given.
pub fn router(shared: Arc<NodeShared>, token: Option<&str>) -> Router {
    let state = AdminState {
        shared,
        token_digest: token.map(|t| digest(t.as_bytes())),
        key_hasher: Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &rand::random::<[u8; 32]>(),
        )),
    };
    Router::new()
        .route("/admin/caches", get(list_caches))
        .route("/admin/caches/{id}/stats", get(stats))
        .route("/admin/caches/{id}/whatif", get(what_if))
        .route("/admin/caches/{id}/hotkeys", get(hot_keys))
        .route("/admin/caches/{id}/flush", post(flush))
        .route("/admin/caches/{id}/credentials", put(replace_credentials))
        .route("/admin/caches/{id}/disabled", put(set_disabled))
        .route("/admin/login", post(login))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// Serve the admin API on `listener` (over TLS when `tls` is given) until
/// the task is dropped.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<NodeShared>,
    token: Option<&str>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let app = router(shared, token);
    match tls {
        Some(config) => {
            axum::serve(super::admin_tls::TlsListener::new(listener, config), app).await
        }
        None => axum::serve(listener, app).await,
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let Some(expected) = state.token_digest else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if token_matches(&expected, token.as_bytes()) => next.run(request).await,
        _ => error(StatusCode::UNAUTHORIZED, "admin token required"),
    }
}

impl From<&Credential> for CredentialView {
    fn from(c: &Credential) -> Self {
        CredentialView {
            username: c.username.clone(),
            primary: c.primary,
            write: c.caps.write,
            flush: c.caps.flush,
            api: c.caps.api,
        }
    }
}

async fn list_caches(State(state): State<AdminState>) -> Json<CachesView> {
    let tenants = state.shared.tenants();
    let caches = tenants
        .file()
        .caches
        .iter()
        .map(|c| CacheView {
            id: c.id.clone(),
            memory_limit: c.memory_limit,
            disabled: c.disabled,
            last_active: tenants.get(&c.id).map_or(0, |t| t.last_active()),
            credentials: c.credentials.iter().map(CredentialView::from).collect(),
        })
        .collect();
    Json(CachesView {
        version: state.shared.config_version(),
        caches,
    })
}

async fn stats(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let tenants = state.shared.tenants();
    let Some(tenant) = tenants.get(&id) else {
        return error(StatusCode::NOT_FOUND, "no such cache");
    };
    let map: Map<String, Value> = state
        .shared
        .api_stats(tenant)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::from(v)))
        .collect();
    Json(Value::Object(map)).into_response()
}

/// The cache's what-if curve: the hit rate at [`crate::mrc::MULTIPLES`] of
/// its limit on this node.
async fn what_if(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let tenants = state.shared.tenants();
    let Some(tenant) = tenants.get(&id) else {
        return error(StatusCode::NOT_FOUND, "no such cache");
    };
    let limit = tenant.store.usage().limit;
    let view: Option<WhatIf> = tenant.store.what_if().map(|t| t.what_if(limit, unix_now()));
    Json(json!({ "tracking": view.is_some(), "what_if": view })).into_response()
}

/// The query of `GET /admin/caches/{id}/hotkeys`.
#[derive(serde::Deserialize)]
struct HotKeysQuery {
    keys: Option<String>,
    limit: Option<usize>,
}

/// Keys listed of each kind when the query does not say.
const HOT_KEYS_LISTED: usize = 20;

/// The cache's heaviest keys on this node; asking starts (or keeps) the
/// cache's tracker.
async fn hot_keys(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    query: Result<Query<HotKeysQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected ?keys=hashed|plain&limit=N",
        );
    };
    let plain = match query.keys.as_deref() {
        None | Some(KEYS_HASHED) => false,
        Some(KEYS_PLAIN) => true,
        Some(_) => return error(StatusCode::BAD_REQUEST, "keys must be hashed or plain"),
    };
    let limit = query.limit.unwrap_or(HOT_KEYS_LISTED).min(CAPACITY);
    let tenants = state.shared.tenants();
    let Some(tenant) = tenants.get(&id) else {
        return error(StatusCode::NOT_FOUND, "no such cache");
    };
    let now_ms = u64::try_from(unix_now_ms()).unwrap_or(0);
    let view = tenant.hot_keys.view(now_ms, limit);
    let show = |keys: Vec<HotKey>| -> Vec<HotKeyView> {
        keys.into_iter()
            .map(|k| HotKeyView {
                key: if plain {
                    escape_key(&k.key)
                } else {
                    hashed_key(&state.key_hasher, &k.key)
                },
                count: k.count,
                error: k.error,
            })
            .collect()
    };
    Json(HotKeysView {
        keys: if plain { KEYS_PLAIN } else { KEYS_HASHED }.to_owned(),
        since: view.since,
        start_ms: view.start_ms,
        end_ms: view.end_ms,
        sample_rate: view.sample_rate,
        ops: view.ops,
        bytes: view.bytes,
        by_ops: show(view.by_ops),
        by_bytes: show(view.by_bytes),
    })
    .into_response()
}

/// A key as the operator sees it: 64 bits of HMAC-SHA256 under the node's
/// secret, in hex.
fn hashed_key(hasher: &ring::hmac::Key, key: &[u8]) -> String {
    let tag = ring::hmac::sign(hasher, key);
    tag.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn flush(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let tenants = state.shared.tenants();
    let Some(tenant) = tenants.get(&id) else {
        return error(StatusCode::NOT_FOUND, "no such cache");
    };
    tenant
        .store
        .execute(&Command::FlushAll { delay: 0 }, unix_now());
    tracing::info!(cache = %id, "flushed by the admin API");
    Json(json!({ "flushed": true })).into_response()
}

async fn replace_credentials(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Json<CredentialsBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(StatusCode::BAD_REQUEST, "expected {\"credentials\": [...]}");
    };
    let shared = Arc::clone(&state.shared);
    let cache_id = id.clone();
    // Parsing hashes and writing the file block: keep them off the runtime.
    let result = tokio::task::spawn_blocking(move || {
        shared.update_credentials(&cache_id, |cache| {
            let mut out = Vec::with_capacity(body.credentials.len());
            for u in body.credentials {
                let secret = match (u.password, u.password_hash) {
                    (Some(_), Some(_)) => {
                        return Err(format!(
                            "credential {:?}: give password or password_hash, not both",
                            u.username
                        ))
                    }
                    (Some(p), None) => Secret::Plain(p),
                    (None, Some(h)) => Secret::from_hash(&h)
                        .map_err(|e| format!("credential {:?}: {e}", u.username))?,
                    (None, None) => cache
                        .credentials
                        .iter()
                        .find(|c| c.username == u.username)
                        .map(|c| c.secret.clone())
                        .ok_or_else(|| {
                            format!(
                                "credential {:?} is new and needs a password or password_hash",
                                u.username
                            )
                        })?,
                };
                out.push(Credential {
                    username: u.username,
                    secret,
                    primary: u.primary,
                    caps: Capabilities {
                        write: u.write,
                        flush: u.flush,
                        api: u.api,
                    },
                });
            }
            Ok(out)
        })
    })
    .await;
    update_reply(&id, result, "credentials replaced by the admin API")
}

async fn set_disabled(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Json<DisabledBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(StatusCode::BAD_REQUEST, "expected {\"disabled\": bool}");
    };
    let shared = Arc::clone(&state.shared);
    let cache_id = id.clone();
    // Writing the caches file blocks: keep it off the runtime.
    let result =
        tokio::task::spawn_blocking(move || shared.set_disabled(&cache_id, body.disabled)).await;
    let what = if body.disabled {
        "cache disabled by the admin API"
    } else {
        "cache enabled by the admin API"
    };
    update_reply(&id, result, what)
}

/// The reply to a change of the caches file, logged as `what` when it took.
fn update_reply(
    id: &str,
    result: Result<Result<u64, UpdateError>, tokio::task::JoinError>,
    what: &str,
) -> Response {
    match result {
        Ok(Ok(version)) => {
            tracing::info!(cache = %id, version, "{what}");
            Json(json!({ "version": version })).into_response()
        }
        Ok(Err(UpdateError::NoSuchCache(_))) => error(StatusCode::NOT_FOUND, "no such cache"),
        Ok(Err(e @ (UpdateError::Rejected(_) | UpdateError::Invalid(_)))) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Ok(Err(e @ UpdateError::Persist(_))) => {
            tracing::error!(cache = %id, error = %e, "caches file not changed");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "update task failed"),
    }
}

async fn login(
    State(state): State<AdminState>,
    body: Result<Json<LoginBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"username\", \"password\"}",
        );
    };
    let tenants = state.shared.tenants();
    let checked = tokio::task::spawn_blocking(move || {
        tenants.check_login(body.username.as_bytes(), body.password.as_bytes())
    })
    .await;
    match checked {
        Ok(Ok((ok, disabled))) => Json(LoginView {
            cache_id: ok.cache_id,
            username: ok.username,
            primary: ok.primary,
            write: ok.caps.write,
            flush: ok.caps.flush,
            api: ok.caps.api,
            disabled,
        })
        .into_response(),
        Ok(Err(_)) => error(StatusCode::FORBIDDEN, "authentication failure"),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "login task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_view::CredentialUpdate;

    #[test]
    fn token_check_and_redacted_debug() {
        let d = digest(b"the-right-token-123");
        assert!(token_matches(&d, b"the-right-token-123"));
        assert!(!token_matches(&d, b"the-right-token-12"));
        assert!(!token_matches(&d, b""));
        let u = CredentialUpdate {
            username: "u".into(),
            password: Some("hunter2".into()),
            password_hash: Some("$argon2id$x".into()),
            primary: true,
            write: true,
            flush: false,
            api: true,
        };
        let text = format!("{u:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("argon2"),
            "{text}"
        );
        let c = AdminConfig {
            listen: "127.0.0.1:1".parse().unwrap(),
            token: Some("sekrit-token".into()),
            tls: None,
        };
        assert!(!format!("{c:?}").contains("sekrit"));
    }
}
