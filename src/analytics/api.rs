//! The `/api/v1` routes, with the paths, shapes, status codes and messages
//! of the hosted service's analytics API.
//!
//! Every route wants HTTP basic auth with a credential of the cache that has
//! the `api` capability (checked by the nodes); anything else is 403 "You
//! are not authorized to perform this action.". A `<cred_id>` is the
//! credential's username (the hosted docs' examples use the username too).
//! Credential changes reach every node; when some node has not applied one
//! yet (it was down; it gets the change when it is back), the 200 reply
//! also carries `"pending_nodes": [...]`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Map, Value};

use super::{Change, NodeDown, Service};
use crate::metrics as m;
use crate::node::admin::{CacheView, CredentialView, LoginView};

pub const NOT_AUTHORIZED: &str = "You are not authorized to perform this action.";
pub const NO_CACHE: &str = "No cache found.";
pub const NO_CREDENTIAL: &str = "No credential found.";
pub const PRIMARY_NOT_DELETABLE: &str = "The primary credential cannot be deleted.";

/// The API router.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/api/v1/login", get(login))
        .route("/api/login", get(login))
        .route("/api/v1/{cache_id}/stats", get(stats))
        .route("/api/v1/{cache_id}/history", get(history))
        .route("/api/v1/{cache_id}/flush", post(flush))
        .route(
            "/api/v1/{cache_id}/credentials",
            get(list_credentials).post(create_credential),
        )
        .route(
            "/api/v1/{cache_id}/credentials/{cred_id}",
            post(update_credential)
                .patch(update_credential)
                .delete(delete_credential),
        )
        .route(
            "/api/v1/{cache_id}/credentials/primary/{cred_id}",
            post(promote_credential).delete(delete_credential),
        )
        .layer(middleware::from_fn(observe))
        .with_state(service)
}

/// Count and log every request, by route pattern (a bounded label).
async fn observe(request: Request, next: Next) -> Response {
    let endpoint = endpoint_of(request.uri().path());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics::counter!(m::ANALYTICS_REQUESTS_TOTAL, "endpoint" => endpoint, "method" => method.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(m::ANALYTICS_REQUEST_DURATION_SECONDS, "endpoint" => endpoint)
        .record(elapsed.as_secs_f64());
    tracing::info!(%method, %endpoint, status, elapsed_ms = elapsed.as_millis() as u64, "api request");
    response
}

/// The route pattern of a path: a bounded metric label, without ids.
pub fn endpoint_of(path: &str) -> &'static str {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["", "api", "v1", "login"] | ["", "api", "login"] => "/api/v1/login",
        ["", "api", "v1", _, "stats"] => "/api/v1/{cache_id}/stats",
        ["", "api", "v1", _, "history"] => "/api/v1/{cache_id}/history",
        ["", "api", "v1", _, "flush"] => "/api/v1/{cache_id}/flush",
        ["", "api", "v1", _, "credentials"] => "/api/v1/{cache_id}/credentials",
        ["", "api", "v1", _, "credentials", "primary", _] => {
            "/api/v1/{cache_id}/credentials/primary/{cred_id}"
        }
        ["", "api", "v1", _, "credentials", _] => "/api/v1/{cache_id}/credentials/{cred_id}",
        _ => "other",
    }
}

/// An error reply: status and the documented message, as plain text.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.1,
        )
            .into_response()
    }
}

fn forbidden() -> ApiError {
    ApiError(StatusCode::FORBIDDEN, NOT_AUTHORIZED.into())
}

fn server_error(down: &[NodeDown]) -> ApiError {
    let nodes: Vec<&str> = down.iter().map(|d| d.node.as_str()).collect();
    for d in down {
        tracing::warn!(node = %d.node, reason = %d.reason, "node unavailable");
    }
    if nodes.is_empty() {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "Server error".into())
    } else {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Server error: {}", nodes.join(",")),
        )
    }
}

/// A cache id as the hosted API shows it: a number when it is one.
fn id_json(id: &str) -> Value {
    match id.parse::<u64>() {
        Ok(n) if n.to_string() == id => Value::from(n),
        _ => Value::from(id),
    }
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
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
async fn authorize(
    service: &Service,
    headers: &HeaderMap,
    cache_id: Option<&str>,
) -> Result<LoginView, ApiError> {
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

async fn login(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&service, &headers, None).await?;
    Ok(Json(json!({ "cache_id": id_json(&caller.cache_id) })))
}

async fn stats(
    State(service): State<Arc<Service>>,
    Path(cache_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, Some(&cache_id)).await?;
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
    Ok(Json(Value::Object(out)))
}

async fn history(
    State(service): State<Arc<Service>>,
    Path(cache_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, Some(&cache_id)).await?;
    let rows = service.db.history(&cache_id).map_err(|error| {
        tracing::error!(%error, "history not read");
        server_error(&[])
    })?;
    let list = rows
        .into_iter()
        .map(|s| {
            json!({
                "memcachier_id": s.cache_id,
                "server": s.server,
                "stats": s.stats,
                "timestamp": s.timestamp_ms.to_string(),
            })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn flush(
    State(service): State<Arc<Service>>,
    Path(cache_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authorize(&service, &headers, Some(&cache_id)).await?;
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
    tracing::info!(cache = %cache_id, "cache flushed through the API");
    Ok((StatusCode::OK, "").into_response())
}

fn credential_json(cache_id: &str, c: &CredentialView) -> Map<String, Value> {
    let v = json!({
        "cache_id": id_json(cache_id),
        "id": c.username,
        "sasl_username": c.username,
        "uuid": null,
        "primary": c.primary,
        "flush_capability": c.flush,
        "write_capability": c.write,
        "api_capability": c.api,
    });
    match v {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn with_pending(mut map: Map<String, Value>, behind: Vec<String>) -> Json<Value> {
    if !behind.is_empty() {
        map.insert("pending_nodes".into(), json!(behind));
    }
    Json(Value::Object(map))
}

/// The cache as an up-to-date node has it.
async fn current_cache(service: &Service, cache_id: &str) -> Result<CacheView, ApiError> {
    match service.reference_cache(cache_id).await {
        Ok(Some(cache)) => Ok(cache),
        Ok(None) => Err(ApiError(StatusCode::NOT_FOUND, NO_CACHE.into())),
        Err(down) => Err(server_error(&down)),
    }
}

async fn find_credential(
    service: &Service,
    cache_id: &str,
    cred_id: &str,
) -> Result<CredentialView, ApiError> {
    current_cache(service, cache_id)
        .await?
        .credentials
        .into_iter()
        .find(|c| c.username == cred_id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, NO_CREDENTIAL.into()))
}

async fn apply(service: &Service, change: Change) -> Result<Vec<String>, ApiError> {
    service.apply_everywhere(change).await.map_err(|refused| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Server error: {}", refused.join(",")),
        )
    })
}

async fn list_credentials(
    State(service): State<Arc<Service>>,
    Path(cache_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, Some(&cache_id)).await?;
    let cache = current_cache(&service, &cache_id).await?;
    let list = cache
        .credentials
        .iter()
        .map(|c| Value::Object(credential_json(&cache_id, c)))
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn create_credential(
    State(service): State<Arc<Service>>,
    Path(cache_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, Some(&cache_id)).await?;
    // At least one up-to-date node must be there to take it.
    current_cache(&service, &cache_id).await?;
    let (username, password) = {
        let mut rng = rand::thread_rng();
        (
            Alphanumeric.sample_string(&mut rng, 12),
            Alphanumeric.sample_string(&mut rng, 32),
        )
    };
    let to_hash = password.clone();
    let password_hash =
        tokio::task::spawn_blocking(move || crate::node::auth::hash_password(&to_hash))
            .await
            .map_err(|_| server_error(&[]))?
            .map_err(|_| server_error(&[]))?;
    let change = Change::Create {
        cache_id: cache_id.clone(),
        username: username.clone(),
        password_hash,
        write: true,
        flush: true,
        api: true,
    };
    let behind = apply(&service, change).await?;
    tracing::info!(cache = %cache_id, %username, "credential created");
    let view = CredentialView {
        username,
        primary: false,
        write: true,
        flush: true,
        api: true,
    };
    let mut map = credential_json(&cache_id, &view);
    map.insert("id".into(), Value::Null);
    map.insert("sasl_password".into(), Value::from(password));
    Ok(with_pending(map, behind))
}

/// A capability from the query string, a JSON body or a form body:
/// booleans, or "true"/"false" (also 1/0, on/off, yes/no).
fn capability(params: &Map<String, Value>, name: &str) -> Result<Option<bool>, ApiError> {
    let bad = || {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{name} must be true or false"),
        )
    };
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "on" | "yes" => Ok(Some(true)),
            "false" | "0" | "off" | "no" => Ok(Some(false)),
            _ => Err(bad()),
        },
        Some(Value::Number(n)) => match n.as_u64() {
            Some(1) => Ok(Some(true)),
            Some(0) => Ok(Some(false)),
            _ => Err(bad()),
        },
        Some(_) => Err(bad()),
    }
}

fn form_pairs(text: &str, into: &mut Map<String, Value>) {
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        into.insert(k.trim().to_owned(), Value::from(v.trim().to_owned()));
    }
}

async fn update_credential(
    State(service): State<Arc<Service>>,
    Path((cache_id, cred_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, Some(&cache_id)).await?;
    let mut params = Map::new();
    if let Some(q) = query {
        form_pairs(&q, &mut params);
    }
    let text = String::from_utf8_lossy(&body);
    if !text.trim().is_empty() {
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => params.extend(map),
            Ok(_) => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    "expected a JSON object".into(),
                ))
            }
            Err(_) => form_pairs(&text, &mut params),
        }
    }
    let flush = capability(&params, "flush_capability")?;
    let write = capability(&params, "write_capability")?;
    let api = capability(&params, "api_capability")?;
    let current = find_credential(&service, &cache_id, &cred_id).await?;
    let next = CredentialView {
        flush: flush.unwrap_or(current.flush),
        write: write.unwrap_or(current.write),
        api: api.unwrap_or(current.api),
        ..current
    };
    let behind = apply(
        &service,
        Change::Update {
            cache_id: cache_id.clone(),
            username: cred_id.clone(),
            write: next.write,
            flush: next.flush,
            api: next.api,
        },
    )
    .await?;
    tracing::info!(cache = %cache_id, username = %cred_id, "credential capabilities changed");
    let mut map = Map::new();
    map.insert("flush_capability".into(), next.flush.into());
    map.insert("write_capability".into(), next.write.into());
    map.insert("api_capability".into(), next.api.into());
    Ok(with_pending(map, behind))
}

async fn promote_credential(
    State(service): State<Arc<Service>>,
    Path((cache_id, cred_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, Some(&cache_id)).await?;
    let current = find_credential(&service, &cache_id, &cred_id).await?;
    let behind = apply(
        &service,
        Change::Promote {
            cache_id: cache_id.clone(),
            username: cred_id.clone(),
        },
    )
    .await?;
    tracing::info!(cache = %cache_id, username = %cred_id, "credential promoted to primary");
    let view = CredentialView {
        primary: true,
        ..current
    };
    let mut map = credential_json(&cache_id, &view);
    map.insert("id".into(), Value::Null);
    Ok(with_pending(map, behind))
}

async fn delete_credential(
    State(service): State<Arc<Service>>,
    Path((cache_id, cred_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&service, &headers, Some(&cache_id)).await?;
    let current = find_credential(&service, &cache_id, &cred_id).await?;
    if current.primary {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            PRIMARY_NOT_DELETABLE.into(),
        ));
    }
    let behind = apply(
        &service,
        Change::Delete {
            cache_id: cache_id.clone(),
            username: cred_id.clone(),
        },
    )
    .await?;
    tracing::info!(cache = %cache_id, username = %cred_id, "credential deleted");
    if behind.is_empty() {
        Ok((StatusCode::OK, "").into_response())
    } else {
        Ok(Json(json!({ "pending_nodes": behind })).into_response())
    }
}
