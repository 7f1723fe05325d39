//! Metric names, their descriptions, and the Prometheus endpoint.
//!
//! Every metric memgate exports is named here, so the README, the Grafana
//! dashboard and the alert rules can be checked against one list. The
//! `metrics` recorder is process-wide; it is installed once, and its text is
//! served from our own HTTP route (the exporter's own listener cannot report
//! an ephemeral port, which tests need).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::protocol::request::CommandKind;

/// Node: logged-in connections open now, per cache.
pub const NODE_CACHE_CONNECTIONS: &str = "memgate_node_cache_connections";
/// Node: items held, per cache.
pub const NODE_CACHE_ITEMS: &str = "memgate_node_cache_items";
/// Node: bytes used (key + value + per-item overhead), per cache.
pub const NODE_CACHE_USED_BYTES: &str = "memgate_node_cache_used_bytes";
/// Node: the cache's memory limit on this node.
pub const NODE_CACHE_LIMIT_BYTES: &str = "memgate_node_cache_limit_bytes";
/// Node: per-cache command counters, labelled by memcached's stat name.
pub const NODE_CACHE_COMMANDS_TOTAL: &str = "memgate_node_cache_commands_total";
/// Node: items evicted while live, per cache.
pub const NODE_CACHE_EVICTIONS_TOTAL: &str = "memgate_node_cache_evictions_total";
/// Node: items removed because they expired, per cache.
pub const NODE_CACHE_EXPIRED_TOTAL: &str = "memgate_node_cache_expired_total";
/// Node: bytes read from clients, per cache.
pub const NODE_CACHE_READ_BYTES_TOTAL: &str = "memgate_node_cache_read_bytes_total";
/// Node: bytes written to clients, per cache.
pub const NODE_CACHE_WRITTEN_BYTES_TOTAL: &str = "memgate_node_cache_written_bytes_total";
/// Node: failed logins, per cache (`cache=""` when the username is unknown).
pub const NODE_AUTH_FAILURES_TOTAL: &str = "memgate_node_auth_failures_total";
/// Node: login attempts the failed-login throttle refused without checking
/// the password, by reason (address, username).
pub const NODE_AUTH_THROTTLED_TOTAL: &str = "memgate_node_auth_throttled_total";
/// Node: client connections accepted, by listener (plain, tls).
pub const NODE_CONNECTIONS_TOTAL: &str = "memgate_node_connections_total";
/// Node: client connections open now, logged in or not.
pub const NODE_OPEN_CONNECTIONS: &str = "memgate_node_open_connections";
/// Node: connections refused because `--max-connections` was reached.
pub const NODE_REFUSED_CONNECTIONS_TOTAL: &str = "memgate_node_refused_connections_total";
/// Node: connections closed on error, by kind (io, protocol, auth_timeout, tls).
pub const NODE_CONNECTION_ERRORS_TOTAL: &str = "memgate_node_connection_errors_total";

/// Proxy: client connections open now.
pub const PROXY_CLIENT_CONNECTIONS: &str = "memgate_proxy_client_connections";
/// Proxy: client connections accepted.
pub const PROXY_CLIENT_CONNECTIONS_TOTAL: &str = "memgate_proxy_client_connections_total";
/// Proxy: client requests, by command and result (ok, miss, client_error, server_error).
pub const PROXY_REQUESTS_TOTAL: &str = "memgate_proxy_requests_total";
/// Proxy: time from parsing a request to its reply being ready, by command.
pub const PROXY_REQUEST_DURATION_SECONDS: &str = "memgate_proxy_request_duration_seconds";
/// Proxy: requests sent to each node.
pub const PROXY_UPSTREAM_REQUESTS_TOTAL: &str = "memgate_proxy_upstream_requests_total";
/// Proxy: round trip to each node.
pub const PROXY_UPSTREAM_DURATION_SECONDS: &str = "memgate_proxy_upstream_duration_seconds";
/// Proxy: upstream failures, by node and kind (connect, tls, auth, timeout, io, protocol, down).
pub const PROXY_UPSTREAM_ERRORS_TOTAL: &str = "memgate_proxy_upstream_errors_total";
/// Proxy: 1 if the node is up, 0 if it is marked down.
pub const PROXY_NODE_UP: &str = "memgate_proxy_node_up";
/// Proxy: 1 on the dialect each node is spoken to in, by node and protocol
/// (meta, meta-memcached, binary); under `--upstream-protocol auto`, all 0
/// until a login finds it.
pub const PROXY_UPSTREAM_PROTOCOL: &str = "memgate_proxy_upstream_protocol";
/// Proxy: logged-in upstream connections open now, per node.
pub const PROXY_UPSTREAM_CONNECTIONS: &str = "memgate_proxy_upstream_connections";
/// Proxy: upstream connections established (TLS + SASL), per node.
pub const PROXY_UPSTREAM_CONNECTS_TOTAL: &str = "memgate_proxy_upstream_connects_total";
/// Proxy: TLS handshakes that failed (certificate, hostname, protocol), per node.
pub const PROXY_TLS_FAILURES_TOTAL: &str = "memgate_proxy_tls_failures_total";
/// Proxy: SASL logins the node refused, per node.
pub const PROXY_SASL_FAILURES_TOTAL: &str = "memgate_proxy_sasl_failures_total";
/// Proxy: bytes read from clients.
pub const PROXY_CLIENT_READ_BYTES_TOTAL: &str = "memgate_proxy_client_read_bytes_total";
/// Proxy: bytes written to clients.
pub const PROXY_CLIENT_WRITTEN_BYTES_TOTAL: &str = "memgate_proxy_client_written_bytes_total";
/// Keys of a multi-key get whose node could not answer, read as misses.
pub const PROXY_MULTIGET_MISSES_TOTAL: &str = "memgate_proxy_multiget_unreachable_keys_total";
/// Proxy: time the event loop was kept from sleeping by `--busy-poll` (the
/// open windows, requests served in them included), in microseconds (the
/// exporter's counters are integers).
pub const PROXY_BUSY_POLL_MICROSECONDS_TOTAL: &str = "memgate_proxy_busy_poll_microseconds_total";
/// Proxy warm-up (`proxy::warmup`): reads of moved keys that missed on their
/// primary node and were read again from the other, by `result` (hit, miss,
/// error).
pub const PROXY_WARMUP_FALLBACKS_TOTAL: &str = "memgate_proxy_warmup_fallbacks_total";
/// Proxy warm-up: deletes of a moved key on its secondary node after a
/// write, by `result` (ok, error).
pub const PROXY_WARMUP_CLEARS_TOTAL: &str = "memgate_proxy_warmup_clears_total";
/// Proxy warm-up: copies of moved items to their new node, by `result`
/// (copied, refused: already there or a tombstone, error).
pub const PROXY_WARMUP_COPIES_TOTAL: &str = "memgate_proxy_warmup_copies_total";
/// Proxy warm-up: nodes given up on during a warm-up, per node.
pub const PROXY_WARMUP_ABANDONED_TOTAL: &str = "memgate_proxy_warmup_abandoned_total";
/// Proxy replicas (`proxy::replicas`): reads that went on to a key's next
/// replica after a miss or an error, by `result` (hit, miss, error).
pub const PROXY_REPLICA_FALLBACKS_TOTAL: &str = "memgate_proxy_replica_fallbacks_total";
/// Proxy replicas: hits read from a later replica copied back to the
/// first, by `result` (copied, refused, error).
pub const PROXY_REPLICA_REPAIRS_TOTAL: &str = "memgate_proxy_replica_repairs_total";
/// Proxy replicas: what a write did to each replica after the first, by
/// `result` (mirrored: given the value; cleared: the key deleted there;
/// refused: a newer value or a tombstone was there; hinted: the node was
/// down; failed: the request failed, and it became a hint).
pub const PROXY_REPLICA_WRITES_TOTAL: &str = "memgate_proxy_replica_writes_total";
/// Proxy replicas: hints, per node, by `event` (written, replayed,
/// overflowed: dropped for a flush of the node's part of the cache).
pub const PROXY_HINTS_TOTAL: &str = "memgate_proxy_hints_total";

/// Proxy metrics with their help text.
pub const PROXY_METRICS: &[(&str, &str)] = &[
    (PROXY_CLIENT_CONNECTIONS, "Client connections open now"),
    (
        PROXY_CLIENT_CONNECTIONS_TOTAL,
        "Client connections accepted",
    ),
    (
        PROXY_REQUESTS_TOTAL,
        "Client requests by command and result",
    ),
    (
        PROXY_REQUEST_DURATION_SECONDS,
        "Request latency inside the proxy, by command",
    ),
    (PROXY_UPSTREAM_REQUESTS_TOTAL, "Requests sent to each node"),
    (PROXY_UPSTREAM_DURATION_SECONDS, "Round trip to each node"),
    (
        PROXY_UPSTREAM_ERRORS_TOTAL,
        "Upstream failures by node and kind",
    ),
    (PROXY_NODE_UP, "1 if the node is up, 0 if marked down"),
    (
        PROXY_UPSTREAM_PROTOCOL,
        "1 on the dialect each node is spoken to in (meta, meta-memcached, binary)",
    ),
    (
        PROXY_UPSTREAM_CONNECTIONS,
        "Logged-in upstream connections open, per node",
    ),
    (
        PROXY_UPSTREAM_CONNECTS_TOTAL,
        "Upstream connections established, per node",
    ),
    (PROXY_TLS_FAILURES_TOTAL, "Failed TLS handshakes with nodes"),
    (PROXY_SASL_FAILURES_TOTAL, "SASL logins refused by nodes"),
    (PROXY_CLIENT_READ_BYTES_TOTAL, "Bytes read from clients"),
    (PROXY_CLIENT_WRITTEN_BYTES_TOTAL, "Bytes written to clients"),
    (
        PROXY_MULTIGET_MISSES_TOTAL,
        "Keys of multi-key gets answered as misses because their node could not answer",
    ),
    (
        PROXY_WARMUP_FALLBACKS_TOTAL,
        "Warm-up: reads of moved keys read again from their other node, by result",
    ),
    (
        PROXY_WARMUP_CLEARS_TOTAL,
        "Warm-up: deletes of moved keys on their other node after a write, by result",
    ),
    (
        PROXY_WARMUP_COPIES_TOTAL,
        "Warm-up: copies of moved items to their new node, by result",
    ),
    (
        PROXY_WARMUP_ABANDONED_TOTAL,
        "Warm-up: nodes given up on (failed or down), per node",
    ),
    (
        PROXY_REPLICA_FALLBACKS_TOTAL,
        "Replicas: reads that went on to the key's next replica, by result",
    ),
    (
        PROXY_REPLICA_REPAIRS_TOTAL,
        "Replicas: hits from a later replica copied back to the first, by result",
    ),
    (
        PROXY_REPLICA_WRITES_TOTAL,
        "Replicas: what writes did to the replicas after the first, by result",
    ),
    (
        PROXY_HINTS_TOTAL,
        "Replicas: hints per node, by event (written, replayed, overflowed)",
    ),
    (
        PROXY_BUSY_POLL_MICROSECONDS_TOTAL,
        "Microseconds the event loop was kept from sleeping by --busy-poll",
    ),
];

/// Analytics: API requests, by endpoint (the route pattern) and status code.
pub const ANALYTICS_REQUESTS_TOTAL: &str = "memgate_analytics_requests_total";
/// Analytics: API request latency, by endpoint.
pub const ANALYTICS_REQUEST_DURATION_SECONDS: &str = "memgate_analytics_request_duration_seconds";
/// Analytics: calls to a node's admin API that failed (unreachable or 5xx), by node.
pub const ANALYTICS_NODE_ERRORS_TOTAL: &str = "memgate_analytics_node_errors_total";
/// Analytics: credential changes waiting for a node that was down, by node.
pub const ANALYTICS_PENDING_CHANGES: &str = "memgate_analytics_pending_changes";
/// Analytics: history rows written.
pub const ANALYTICS_SAMPLES_TOTAL: &str = "memgate_analytics_samples_total";
/// Analytics: caches disabled for inactivity (`--disable-after`).
pub const ANALYTICS_CACHES_DISABLED_TOTAL: &str = "memgate_analytics_caches_disabled_total";

/// Analytics metrics with their help text.
pub const ANALYTICS_METRICS: &[(&str, &str)] = &[
    (
        ANALYTICS_REQUESTS_TOTAL,
        "API requests by endpoint and status code",
    ),
    (
        ANALYTICS_REQUEST_DURATION_SECONDS,
        "API request latency, by endpoint",
    ),
    (
        ANALYTICS_NODE_ERRORS_TOTAL,
        "Failed calls to a node's admin API, by node",
    ),
    (
        ANALYTICS_PENDING_CHANGES,
        "Credential changes a node has not applied yet, by node",
    ),
    (ANALYTICS_SAMPLES_TOTAL, "History rows written"),
    (
        ANALYTICS_CACHES_DISABLED_TOTAL,
        "Caches disabled after --disable-after of inactivity",
    ),
];

/// Latency buckets (seconds): 50 µs to 5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// Every metric name with its help text, for describe_* and the README.
pub const NODE_METRICS: &[(&str, &str)] = &[
    (
        NODE_CACHE_CONNECTIONS,
        "Logged-in connections open now, per cache",
    ),
    (NODE_CACHE_ITEMS, "Items held, per cache"),
    (
        NODE_CACHE_USED_BYTES,
        "Bytes used by items (key, value and overhead), per cache",
    ),
    (
        NODE_CACHE_LIMIT_BYTES,
        "Memory limit of the cache on this node",
    ),
    (
        NODE_CACHE_COMMANDS_TOTAL,
        "Commands and their outcomes, per cache, by memcached stat name",
    ),
    (
        NODE_CACHE_EVICTIONS_TOTAL,
        "Live items evicted to make room, per cache",
    ),
    (
        NODE_CACHE_EXPIRED_TOTAL,
        "Items reclaimed after expiring, per cache",
    ),
    (
        NODE_CACHE_READ_BYTES_TOTAL,
        "Bytes read from clients, per cache",
    ),
    (
        NODE_CACHE_WRITTEN_BYTES_TOTAL,
        "Bytes written to clients, per cache",
    ),
    (NODE_AUTH_FAILURES_TOTAL, "Failed logins, per cache"),
    (
        NODE_AUTH_THROTTLED_TOTAL,
        "Logins refused unchecked by the failed-login throttle, by reason",
    ),
    (
        NODE_CONNECTIONS_TOTAL,
        "Client connections accepted, by listener",
    ),
    (NODE_OPEN_CONNECTIONS, "Client connections open now"),
    (
        NODE_REFUSED_CONNECTIONS_TOTAL,
        "Connections refused at --max-connections",
    ),
    (
        NODE_CONNECTION_ERRORS_TOTAL,
        "Connections closed on error, by kind",
    ),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process-wide recorder (once) and describe every metric.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (only possible in embedders'
                // tests); render from a detached one rather than panic.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            for (name, help) in NODE_METRICS
                .iter()
                .chain(PROXY_METRICS)
                .chain(ANALYTICS_METRICS)
            {
                metrics::describe_counter!(*name, *help);
            }
            // install_recorder() runs no upkeep task: without one, histogram
            // samples pile up until the next scrape, unbounded if nobody
            // scrapes. Drain them every few seconds on a small thread.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                });
            handle
        })
        .clone()
}

/// The bounded `command` label values of `memgate_proxy_requests_total`,
/// indexed by `CommandKind as usize` (in the enum's order).
pub const COMMAND_LABELS: [&str; CommandKind::COUNT] = [
    "get",
    "gat",
    "set",
    "add",
    "replace",
    "append",
    "prepend",
    "cas",
    "delete",
    "incr",
    "decr",
    "touch",
    "flush_all",
    "version",
    "verbosity",
    "stats",
    "quit",
    "noop",
    "meta_debug",
    "auth",
    "other",
];
/// The `result` label values of `memgate_proxy_requests_total`.
pub const RESULT_LABELS: &[&str] = &["ok", "miss", "client_error", "server_error"];

/// The proxy's per-request metric handles, resolved once so that the request
/// path only bumps atomics (a labelled `counter!` lookup per request costs
/// more than the rest of the bookkeeping).
pub struct RequestMetrics {
    requests: Vec<metrics::Counter>,
    durations: Vec<metrics::Histogram>,
    pub read_bytes: metrics::Counter,
    pub written_bytes: metrics::Counter,
}

impl RequestMetrics {
    pub fn get() -> &'static RequestMetrics {
        static METRICS: OnceLock<RequestMetrics> = OnceLock::new();
        METRICS.get_or_init(|| {
            install();
            let mut requests = Vec::with_capacity(COMMAND_LABELS.len() * RESULT_LABELS.len());
            for command in &COMMAND_LABELS {
                for result in RESULT_LABELS {
                    requests.push(metrics::counter!(PROXY_REQUESTS_TOTAL, "command" => *command, "result" => *result));
                }
            }
            RequestMetrics {
                requests,
                durations: COMMAND_LABELS
                    .iter()
                    .map(|c| metrics::histogram!(PROXY_REQUEST_DURATION_SECONDS, "command" => *c))
                    .collect(),
                read_bytes: metrics::counter!(PROXY_CLIENT_READ_BYTES_TOTAL),
                written_bytes: metrics::counter!(PROXY_CLIENT_WRITTEN_BYTES_TOTAL),
            }
        })
    }

    /// Count one request; `result` indexes RESULT_LABELS.
    pub fn record(&self, command: CommandKind, result: usize, seconds: f64) {
        let command = command as usize;
        if let Some(c) = self.requests.get(command * RESULT_LABELS.len() + result) {
            c.increment(1);
        }
        if let Some(h) = self.durations.get(command) {
            h.record(seconds);
        }
    }
}

/// What a replicated write did to a replica after the first
/// (`PROXY_REPLICA_WRITES_TOTAL`'s `result` label).
pub const REPLICA_WRITE_RESULTS: [&str; 5] = ["mirrored", "cleared", "refused", "hinted", "failed"];

/// The replicas' per-write counter handles, resolved once (and exported at
/// 0), for the reason `RequestMetrics` gives.
pub struct ReplicaMetrics {
    writes: Vec<metrics::Counter>,
}

impl ReplicaMetrics {
    pub fn get() -> &'static ReplicaMetrics {
        static METRICS: OnceLock<ReplicaMetrics> = OnceLock::new();
        METRICS.get_or_init(|| {
            install();
            let writes: Vec<metrics::Counter> = REPLICA_WRITE_RESULTS
                .iter()
                .map(|result| metrics::counter!(PROXY_REPLICA_WRITES_TOTAL, "result" => *result))
                .collect();
            for counter in &writes {
                counter.increment(0);
            }
            ReplicaMetrics { writes }
        })
    }

    /// Count one write given to a replica; `result` is one of
    /// REPLICA_WRITE_RESULTS.
    pub fn wrote(&self, result: &str) {
        let index = REPLICA_WRITE_RESULTS.iter().position(|r| *r == result);
        if let Some(counter) = index.and_then(|i| self.writes.get(i)) {
            counter.increment(1);
        }
    }
}

/// A hook run before each scrape, to refresh gauges computed on demand.
pub type Refresh = Arc<dyn Fn() + Send + Sync>;

/// A hook that answers `/readyz`.
pub type Ready = Arc<dyn Fn() -> bool + Send + Sync>;

/// Serve `/metrics`, `/healthz` and `/readyz` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, refresh: Refresh, ready: Ready) -> std::io::Result<()> {
    let handle = install();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                let refresh = refresh.clone();
                async move {
                    refresh();
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        handle.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready() {
                        (StatusCode::OK, "ready\n").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
                    }
                }
            }),
        );
    axum::serve(listener, app).await
}

/// Bind the metrics listener (so bad addresses fail before serving).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind keeps the label it was exported under before labels were
    /// looked up by index; a reordered enum or table would swap them.
    #[test]
    fn command_labels_follow_command_kind() {
        let labels = [
            (CommandKind::Get, "get"),
            (CommandKind::Gat, "gat"),
            (CommandKind::Set, "set"),
            (CommandKind::Add, "add"),
            (CommandKind::Replace, "replace"),
            (CommandKind::Append, "append"),
            (CommandKind::Prepend, "prepend"),
            (CommandKind::Cas, "cas"),
            (CommandKind::Delete, "delete"),
            (CommandKind::Incr, "incr"),
            (CommandKind::Decr, "decr"),
            (CommandKind::Touch, "touch"),
            (CommandKind::FlushAll, "flush_all"),
            (CommandKind::Version, "version"),
            (CommandKind::Verbosity, "verbosity"),
            (CommandKind::Stats, "stats"),
            (CommandKind::Quit, "quit"),
            (CommandKind::Noop, "noop"),
            (CommandKind::MetaDebug, "meta_debug"),
            (CommandKind::Auth, "auth"),
            (CommandKind::Other, "other"),
        ];
        assert_eq!(labels.len(), CommandKind::COUNT);
        for (kind, label) in labels {
            assert_eq!(COMMAND_LABELS[kind as usize], label, "{kind:?}");
        }
    }
}
