//! The cache owner's dashboard at `/caches/<cache_id>`.
//!
//! Same login as the API (HTTP basic auth with a credential of the cache
//! that has `api`), same 403/404 messages, same operations ([`super::ops`]).
//! A request without credentials gets a 401 challenge so a browser asks
//! for them. The page is rendered on the server ([`view`], [`graph`]) and
//! works without JavaScript; the embedded script only swaps graphs in place
//! and asks for confirmations. Nothing is loaded from outside the binary.
//!
//! Browsers resend basic-auth credentials on any request to the origin, so
//! every form POST carries a token (an HMAC of cache id and username under a
//! key made at start-up) and cross-site POSTs are refused.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /caches/{id}` (`?a=usage&b=hit_rate`) | the page, with the two picked graphs |
//! | `GET /caches/{id}/graphs` | just the graphs section (for the script) |
//! | `POST /caches/{id}/credentials` | create a credential; the page shows its password once |
//! | `POST /caches/{id}/credentials/{cred}/capabilities` | set `write`, `flush`, `api` (checkboxes) |
//! | `POST /caches/{id}/credentials/{cred}/promote` | make it primary |
//! | `POST /caches/{id}/credentials/{cred}/delete` | delete it |
//! | `GET`/`POST /caches/{id}/flush` | the confirmation page; flushes with `confirm=yes` |
//! | `POST /caches/{id}/enable` | enable a disabled cache |
//! | `GET /assets/dashboard.css`, `/assets/dashboard.js` | the embedded assets |
//! | `GET /favicon.ico` | 204: there is none |

mod format;
mod graph;
mod hot_keys;
mod view;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;

use super::ops::{self, CapabilityChange, OpError};
use super::Service;
use crate::admin_view::LoginView;
use graph::Series;

const CSS: &str = include_str!("dashboard/page.css");
const JS: &str = include_str!("dashboard/page.js");

/// Only the binary's own assets, no inline script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

struct Dashboard {
    service: Arc<Service>,
    /// Signs the forms' CSRF tokens; made at start-up, so a restart only
    /// means reloading the page.
    csrf_key: ring::hmac::Key,
}

/// The dashboard's routes.
pub fn router(service: Arc<Service>) -> Router {
    let rng = ring::rand::SystemRandom::new();
    let csrf_key = match ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng) {
        Ok(key) => key,
        // The system RNG failing is not recoverable; fall back to a
        // per-process random key from `rand` rather than refusing to start.
        Err(_) => ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()),
    };
    let state = Arc::new(Dashboard { service, csrf_key });
    Router::new()
        .route("/assets/dashboard.css", get(css))
        .route("/assets/dashboard.js", get(js))
        // Browsers ask for it on every origin; answer rather than 404.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/caches/{cache_id}",
            get(|state, Path(id): Path<String>, query, headers| {
                cache_get(state, Path((id, String::new())), query, headers)
            }),
        )
        .route(
            "/caches/{cache_id}/{action}",
            get(cache_get).post(cache_post),
        )
        .route(
            "/caches/{cache_id}/credentials/{cred_id}/{action}",
            post(credential_action),
        )
        .with_state(state)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// An HTML reply with the security headers; never cached (it shows
/// credentials and live numbers).
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, header::CONTENT_TYPE, "text/html; charset=utf-8");
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_FRAME_OPTIONS, "DENY");
    // Not no-referrer: under it Chrome sends `Origin: null` with form
    // POSTs, which the CSRF check must refuse.
    set(h, header::REFERRER_POLICY, "same-origin");
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    response
}

fn error_page(e: OpError) -> Response {
    html(e.0, view::error_page(e.0.as_u16(), &e.1))
}

/// The caller, as the API checks it; without credentials, a challenge so
/// the browser asks for them.
async fn caller(
    dash: &Dashboard,
    headers: &HeaderMap,
    cache_id: &str,
) -> Result<LoginView, Response> {
    if ops::basic_auth(headers).is_none() {
        let mut response = html(
            StatusCode::UNAUTHORIZED,
            view::error_page(401, "Log in with a credential of this cache."),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"memgate analytics\", charset=\"UTF-8\""),
        );
        return Err(response);
    }
    ops::authorize(&dash.service, headers, Some(cache_id))
        .await
        .map_err(error_page)
}

impl Dashboard {
    fn csrf_token(&self, login: &LoginView) -> String {
        let mut message = login.cache_id.as_bytes().to_vec();
        message.push(0);
        message.extend_from_slice(login.username.as_bytes());
        let tag = ring::hmac::sign(&self.csrf_key, &message);
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether a form POST comes from this origin and carries this login's
    /// token.
    fn form_ok(
        &self,
        login: &LoginView,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> bool {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let cross_site = text(header::HeaderName::from_static("sec-fetch-site"))
            .is_some_and(|site| site == "cross-site");
        let foreign_origin = match (text(header::ORIGIN), text(header::HOST)) {
            (Some(origin), Some(host)) => origin
                .split_once("://")
                .is_none_or(|(_, rest)| rest.trim_end_matches('/') != host),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let expected = self.csrf_token(login);
        let presented = form.get("csrf").map(String::as_str).unwrap_or("");
        let token_ok = bool::from(expected.as_bytes().ct_eq(presented.as_bytes()));
        if cross_site || foreign_origin || !token_ok {
            tracing::warn!(cache = %login.cache_id, "dashboard form refused (CSRF check)");
            return false;
        }
        true
    }
}

/// The two graphs of a query (`a`, `b`), usage and hit rate by default.
fn picked(query: &HashMap<String, String>) -> [Series; 2] {
    let pick = |name: &str, default| {
        query
            .get(name)
            .and_then(|k| Series::parse(k))
            .unwrap_or(default)
    };
    [pick("a", Series::Usage), pick("b", Series::HitRate)]
}

/// What `?done=` says happened (a fixed set, so no text is reflected).
fn notice(query: &HashMap<String, String>) -> Option<&'static str> {
    Some(match query.get("done")?.as_str() {
        "flushed" => "The cache was flushed on every node.",
        "updated" => "The credential's capabilities were saved.",
        "promoted" => "The credential is now the primary one.",
        "deleted" => "The credential was deleted.",
        "enabled" => "The cache is enabled again.",
        _ => return None,
    })
}

/// Render the dashboard for a checked caller.
async fn render(
    dash: &Dashboard,
    login: &LoginView,
    cache_id: &str,
    query: &HashMap<String, String>,
    created: Option<(&str, &str)>,
) -> Result<Response, OpError> {
    let service = &dash.service;
    let cache = ops::current_cache(service, cache_id).await?;
    let stats = ops::node_stats(service, cache_id).await?;
    let what_if = ops::what_if(service, cache_id).await?;
    // The owner looking at the page is the question that keeps the nodes
    // counting this cache's hot keys.
    let hot_keys = ops::hot_keys(service, cache_id, hot_keys::LISTED).await?;
    let history = service.db.history(cache_id).map_err(|error| {
        tracing::error!(%error, "history not read");
        ops::server_error(&[])
    })?;
    let mut pending: Vec<String> = service.pending_nodes().into_iter().collect();
    pending.sort();
    let csrf = dash.csrf_token(login);
    let page = view::Page {
        cache: &cache,
        caller: login,
        stats: &stats,
        history: &history,
        what_if: what_if.merged.as_ref(),
        what_if_off: &what_if.tracking_off,
        hot_keys: &hot_keys,
        graphs: picked(query),
        csrf: &csrf,
        notice: if created.is_some() {
            Some("The credential was created.")
        } else {
            notice(query)
        },
        created,
        pending,
    };
    Ok(html(StatusCode::OK, view::page(&page)))
}

/// `GET /caches/{id}` (the page, `action` empty), `…/graphs` (the graphs
/// section alone) and `…/flush` (the confirmation page).
async fn cache_get(
    State(dash): State<Arc<Dashboard>>,
    Path((cache_id, action)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let login = match caller(&dash, &headers, &cache_id).await {
        Ok(login) => login,
        Err(response) => return response,
    };
    match action.as_str() {
        "" => render(&dash, &login, &cache_id, &query, None)
            .await
            .unwrap_or_else(error_page),
        "graphs" => match dash.service.db.history(&cache_id) {
            Ok(history) => html(
                StatusCode::OK,
                view::graphs(&cache_id, &history, picked(&query)),
            ),
            Err(error) => {
                tracing::error!(%error, "history not read");
                error_page(ops::server_error(&[]))
            }
        },
        "flush" => html(
            StatusCode::OK,
            view::confirm_flush(&cache_id, &dash.csrf_token(&login)),
        ),
        _ => no_such_action(),
    }
}

fn no_such_action() -> Response {
    error_page(OpError(StatusCode::NOT_FOUND, "No such page.".into()))
}

/// Check the caller and the form, then run `action`; its result is the page.
async fn form_post<F, Fut>(
    dash: &Dashboard,
    headers: &HeaderMap,
    cache_id: &str,
    form: &HashMap<String, String>,
    action: F,
) -> Response
where
    F: FnOnce(LoginView) -> Fut,
    Fut: std::future::Future<Output = Result<Response, OpError>>,
{
    let login = match caller(dash, headers, cache_id).await {
        Ok(login) => login,
        Err(response) => return response,
    };
    if !dash.form_ok(&login, headers, form) {
        return error_page(OpError(
            StatusCode::FORBIDDEN,
            "This form is out of date or came from another site; reload the page.".into(),
        ));
    }
    action(login).await.unwrap_or_else(error_page)
}

/// Back to the page with a notice (POST, redirect, GET: a reload does not
/// repeat the action).
fn back(cache_id: &str, done: &str) -> Response {
    Redirect::to(&format!(
        "/caches/{}?done={done}#notice",
        format::url_segment(cache_id)
    ))
    .into_response()
}

/// `POST /caches/{id}/credentials` (create), `…/flush` (asks first unless
/// `confirm=yes`) and `…/enable`.
async fn cache_post(
    State(dash): State<Arc<Dashboard>>,
    Path((cache_id, action)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let d = &dash;
    let id = cache_id.as_str();
    let confirmed = form.get("confirm").is_some_and(|v| v == "yes");
    form_post(d, &headers, id, &form, |login| async move {
        match action.as_str() {
            "credentials" => {
                let created = ops::create_credential(&d.service, id).await?;
                let shown = (created.view.username.as_str(), created.password.as_str());
                render(d, &login, id, &HashMap::new(), Some(shown)).await
            }
            "flush" if !login.flush => Err(ops::forbidden()),
            "flush" if !confirmed => Ok(html(
                StatusCode::OK,
                view::confirm_flush(id, &d.csrf_token(&login)),
            )),
            "flush" => {
                ops::flush(&d.service, &login, id).await?;
                Ok(back(id, "flushed"))
            }
            "enable" => {
                ops::enable(&d.service, id).await?;
                Ok(back(id, "enabled"))
            }
            _ => Ok(no_such_action()),
        }
    })
    .await
}

async fn credential_action(
    State(dash): State<Arc<Dashboard>>,
    Path((cache_id, cred_id, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let d = &dash;
    let (id, cred) = (cache_id.as_str(), cred_id.as_str());
    let checkbox = |name: &str| Some(form.get(name).is_some_and(|v| v == "on"));
    let caps = CapabilityChange {
        write: checkbox("write"),
        flush: checkbox("flush"),
        api: checkbox("api"),
    };
    form_post(d, &headers, id, &form, |_| async move {
        match action.as_str() {
            "capabilities" => {
                ops::update_credential(&d.service, id, cred, caps).await?;
                Ok(back(id, "updated"))
            }
            "promote" => {
                ops::promote_credential(&d.service, id, cred).await?;
                Ok(back(id, "promoted"))
            }
            "delete" => {
                ops::delete_credential(&d.service, id, cred).await?;
                Ok(back(id, "deleted"))
            }
            _ => Ok(no_such_action()),
        }
    })
    .await
}
