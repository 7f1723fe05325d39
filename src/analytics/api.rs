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
//!
//! Beyond the hosted API: `POST /api/v1/<cache_id>/enable` enables a cache
//! that `--disable-after` disabled, and `GET /api/v1/<cache_id>/whatif`
//! gives the cache's predicted hit rate at other memory sizes: `{"what_if":
//! merged curve | null, "servers": {node: curve}, "tracking_off": [node],
//! "history": [{"timestamp", "what_if"}]}` (the curve is
//! `mrc::WhatIf`; `tracking_off` lists the nodes that host the cache
//! with `--what-if off`, whose share the merged curve leaves out).
//! `GET /api/v1/<cache_id>/hotkeys` (`?limit=20`) gives the cache's
//! heaviest keys over the last 5 to 10 s, by operations and by bytes,
//! across its nodes: `{"ops", "bytes", "by_ops": [{"key", "ops", "error",
//! "share", "server"}], "by_bytes": [{"key", "bytes", ...}], "servers":
//! {node: {"since", "start_ms", "end_ms", "sample_rate", "ops", "bytes"}}}`.
//! Keys are shown as `admin_view::escape_key` writes them.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::ops::{self, authorize, CapabilityChange, OpError as ApiError};
use super::Service;
use crate::admin_view::CredentialView;
use crate::metrics as m;

pub use super::ops::{NOT_AUTHORIZED, NO_CACHE, NO_CREDENTIAL, PRIMARY_NOT_DELETABLE};

/// The API router.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/api/v1/login", get(login))
        .route("/api/login", get(login))
        .route("/api/v1/{cache_id}/stats", get(stats))
        .route("/api/v1/{cache_id}/history", get(history))
        .route("/api/v1/{cache_id}/whatif", get(what_if))
        .route("/api/v1/{cache_id}/hotkeys", get(hot_keys))
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
        .route("/api/v1/{cache_id}/enable", post(enable))
        .with_state(service)
}

/// Count and log every request (API and dashboard), by route pattern (a
/// bounded label).
pub async fn observe(request: Request, next: Next) -> Response {
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
        ["", "api", "v1", _, "whatif"] => "/api/v1/{cache_id}/whatif",
        ["", "api", "v1", _, "hotkeys"] => "/api/v1/{cache_id}/hotkeys",
        ["", "api", "v1", _, "flush"] => "/api/v1/{cache_id}/flush",
        ["", "api", "v1", _, "credentials"] => "/api/v1/{cache_id}/credentials",
        ["", "api", "v1", _, "credentials", "primary", _] => {
            "/api/v1/{cache_id}/credentials/primary/{cred_id}"
        }
        ["", "api", "v1", _, "credentials", _] => "/api/v1/{cache_id}/credentials/{cred_id}",
        ["", "api", "v1", _, "enable"] => "/api/v1/{cache_id}/enable",
        ["", "caches", _] => "/caches/{cache_id}",
        ["", "assets", _] => "/assets/{file}",
        ["", "caches", _, "credentials", _, _] => {
            "/caches/{cache_id}/credentials/{cred_id}/{action}"
        }
        ["", "caches", _, action] => match *action {
            "graphs" => "/caches/{cache_id}/graphs",
            "flush" => "/caches/{cache_id}/flush",
            "enable" => "/caches/{cache_id}/enable",
            "credentials" => "/caches/{cache_id}/credentials",
            _ => "other",
        },
        _ => "other",
    }
}

/// A cache id as the hosted API shows it: a number when it is one.
fn id_json(id: &str) -> Value {
    match id.parse::<u64>() {
        Ok(n) if n.to_string() == id => Value::from(n),
        _ => Value::from(id),
    }
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
    Ok(Json(Value::Object(
        ops::node_stats(&service, &cache_id).await?,
    )))
}

async fn history(
    State(service): State<Arc<Service>>,
    Path(cache_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, Some(&cache_id)).await?;
    let rows = service.db.history(&cache_id).map_err(|error| {
        tracing::error!(%error, "history not read");
        ops::server_error(&[])
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

async fn what_if(
    State(service): State<Arc<Service>>,
    Path(cache_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, Some(&cache_id)).await?;
    let curves = ops::what_if(&service, &cache_id).await?;
    let kept = service.db.what_if_history(&cache_id).map_err(|error| {
        tracing::error!(%error, "what-if history not read");
        ops::server_error(&[])
    })?;
    let history: Vec<Value> = kept
        .into_iter()
        .map(|(t, curve)| json!({ "timestamp": t.to_string(), "what_if": curve }))
        .collect();
    Ok(Json(json!({
        "what_if": curves.merged,
        "servers": curves.servers,
        "tracking_off": curves.tracking_off,
        "history": history,
    })))
}

/// Keys listed of each kind unless `?limit=` says.
pub const HOT_KEYS_LISTED: usize = 20;
/// The most `?limit=` may ask for (a node keeps 512 of each kind).
const HOT_KEYS_MAX: usize = 512;

async fn hot_keys(
    State(service): State<Arc<Service>>,
    Path(cache_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, Some(&cache_id)).await?;
    let mut params = Map::new();
    if let Some(q) = query {
        form_pairs(&q, &mut params);
    }
    let limit = match params.get("limit").and_then(Value::as_str) {
        None => HOT_KEYS_LISTED,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (1..=HOT_KEYS_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("limit must be 1 to {HOT_KEYS_MAX}"),
                ))
            }
        },
    };
    let hot = ops::hot_keys(&service, &cache_id, limit).await?;
    let list = |keys: &[ops::HotKey], unit: &str| -> Vec<Value> {
        keys.iter()
            .map(|k| {
                json!({
                    "key": k.key,
                    unit: k.count,
                    "error": k.error,
                    "share": k.share,
                    "server": k.server,
                })
            })
            .collect()
    };
    let servers: Map<String, Value> = hot
        .servers
        .iter()
        .map(|(label, v)| {
            let summary = json!({
                "since": v.since,
                "start_ms": v.start_ms,
                "end_ms": v.end_ms,
                "sample_rate": v.sample_rate,
                "ops": v.ops,
                "bytes": v.bytes,
            });
            (label.clone(), summary)
        })
        .collect();
    Ok(Json(json!({
        "ops": hot.ops,
        "bytes": hot.bytes,
        "by_ops": list(&hot.by_ops, "ops"),
        "by_bytes": list(&hot.by_bytes, "bytes"),
        "servers": servers,
    })))
}

async fn flush(
    State(service): State<Arc<Service>>,
    Path(cache_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authorize(&service, &headers, Some(&cache_id)).await?;
    ops::flush(&service, &caller, &cache_id).await?;
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

/// An empty 200, or the nodes still behind.
fn done(behind: Vec<String>) -> Response {
    if behind.is_empty() {
        (StatusCode::OK, "").into_response()
    } else {
        Json(json!({ "pending_nodes": behind })).into_response()
    }
}

async fn list_credentials(
    State(service): State<Arc<Service>>,
    Path(cache_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, Some(&cache_id)).await?;
    let cache = ops::current_cache(&service, &cache_id).await?;
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
    let created = ops::create_credential(&service, &cache_id).await?;
    let mut map = credential_json(&cache_id, &created.view);
    map.insert("id".into(), Value::Null);
    map.insert("sasl_password".into(), Value::from(created.password));
    Ok(with_pending(map, created.behind))
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
    let caps = CapabilityChange {
        flush: capability(&params, "flush_capability")?,
        write: capability(&params, "write_capability")?,
        api: capability(&params, "api_capability")?,
    };
    let (next, behind) = ops::update_credential(&service, &cache_id, &cred_id, caps).await?;
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
    let (view, behind) = ops::promote_credential(&service, &cache_id, &cred_id).await?;
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
    Ok(done(
        ops::delete_credential(&service, &cache_id, &cred_id).await?,
    ))
}

async fn enable(
    State(service): State<Arc<Service>>,
    Path(cache_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&service, &headers, Some(&cache_id)).await?;
    Ok(done(ops::enable(&service, &cache_id).await?))
}

#[cfg(test)]
mod tests {
    use super::endpoint_of;

    #[test]
    fn endpoints_are_route_patterns_without_ids() {
        for (path, pattern) in [
            ("/api/v1/1561/stats", "/api/v1/{cache_id}/stats"),
            ("/api/v1/1561/enable", "/api/v1/{cache_id}/enable"),
            ("/api/v1/1561/whatif", "/api/v1/{cache_id}/whatif"),
            ("/api/v1/1561/hotkeys", "/api/v1/{cache_id}/hotkeys"),
            ("/caches/1561", "/caches/{cache_id}"),
            ("/caches/1561/graphs", "/caches/{cache_id}/graphs"),
            (
                "/caches/1561/credentials/bob/delete",
                "/caches/{cache_id}/credentials/{cred_id}/{action}",
            ),
            ("/assets/dashboard.js", "/assets/{file}"),
            ("/caches/1561/whatever", "other"),
        ] {
            assert_eq!(endpoint_of(path), pattern, "{path}");
        }
    }
}
