//! What a node reports about its caches: the `stats` command, the
//! analytics API's per-cache stats, and the Prometheus gauges and counters.
//! All of it is read from the same sources, each cache's [`CacheStats`]
//! counters and its store's usage, so the three views agree.
//!
//! [`CacheStats`]: super::counters::CacheStats

use std::sync::atomic::{AtomicU64, Ordering};

use super::tenants::Tenant;
use super::NodeShared;
use crate::clock::unix_now;
use crate::metrics as m;
use crate::protocol::{ErrorReply, Response, MAX_KEY_LEN};
use crate::VERSION;

/// The per-cache stats the analytics API exposes, in the order docs/ARCHITECTURE.md lists.
pub const API_STATS: &[&str] = &[
    "curr_connections",
    "total_connections",
    "curr_items",
    "total_items",
    "bytes",
    "limit_maxbytes",
    "time",
    "auth_cmds",
    "auth_errors",
    "bytes_read",
    "bytes_written",
    "cmd_get",
    "cmd_set",
    "cmd_delete",
    "cmd_flush",
    "cmd_touch",
    "get_hits",
    "get_misses",
    "delete_hits",
    "delete_misses",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
    "touch_hits",
    "touch_misses",
    "cas_hits",
    "cas_misses",
    "cas_badval",
    "evictions",
    "expired",
];

/// The cache counters `stats` lists before `limit_maxbytes`, in
/// memcached 1.6.18's order, so that tools which read the reply in order
/// (or diff it against memcached's) find them where they expect.
const MEMCACHED_ORDER_HEAD: &[&str] = &[
    "curr_connections",
    "total_connections",
    "cmd_get",
    "cmd_set",
    "cmd_flush",
    "cmd_touch",
    "get_hits",
    "get_misses",
    "get_expired",
    "get_flushed",
    "delete_misses",
    "delete_hits",
    "incr_misses",
    "incr_hits",
    "decr_misses",
    "decr_hits",
    "cas_misses",
    "cas_hits",
    "cas_badval",
    "touch_hits",
    "touch_misses",
    "auth_cmds",
    "auth_errors",
    "bytes_read",
    "bytes_written",
];

impl NodeShared {
    /// The analytics API's stats of one cache ([`API_STATS`]).
    pub fn api_stats(&self, tenant: &Tenant) -> Vec<(&'static str, u64)> {
        let usage = tenant.store.usage();
        let counters = tenant.stats.counters();
        API_STATS
            .iter()
            .map(|&name| {
                let value = match name {
                    "curr_items" => usage.items,
                    "bytes" => usage.bytes,
                    "limit_maxbytes" => usage.limit,
                    "time" => unix_now(),
                    _ => counters
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or(0, |(_, v)| *v),
                };
                (name, value)
            })
            .collect()
    }

    /// `stats [group]` for the logged-in cache.
    pub fn stats(&self, tenant: &Tenant, group: Option<&str>) -> Response {
        let s = &self.settings;
        let pairs: Vec<(String, String)> = match group {
            None => {
                let usage = tenant.store.usage();
                let counters = tenant.stats.counters();
                let counter = |name: &str| {
                    counters
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or(0, |(_, v)| *v)
                        .to_string()
                };
                let mut pairs = vec![
                    ("pid".to_string(), std::process::id().to_string()),
                    (
                        "uptime".into(),
                        self.started.elapsed().as_secs().to_string(),
                    ),
                    ("time".into(), unix_now().to_string()),
                    ("version".into(), VERSION.into()),
                    ("pointer_size".into(), (usize::BITS).to_string()),
                    ("max_connections".into(), s.max_connections.to_string()),
                ];
                let named = |names: &[&str]| -> Vec<(String, String)> {
                    names.iter().map(|&n| (n.to_string(), counter(n))).collect()
                };
                pairs.extend(named(MEMCACHED_ORDER_HEAD));
                pairs.push(("limit_maxbytes".into(), usage.limit.to_string()));
                pairs.push(("threads".into(), worker_threads().to_string()));
                pairs.push(("bytes".into(), usage.bytes.to_string()));
                pairs.push(("curr_items".into(), usage.items.to_string()));
                // Then every other counter, so that none is ever left out.
                for (name, value) in &counters {
                    if !pairs.iter().any(|(n, _)| n == name) {
                        pairs.push((name.to_string(), value.to_string()));
                    }
                }
                pairs
            }
            // In memcached 1.6.18's order, then memgate's own settings.
            Some(g) if g.split(' ').next() == Some("settings") => vec![
                ("maxbytes".into(), tenant.store.usage().limit.to_string()),
                ("maxconns".into(), s.max_connections.to_string()),
                ("evictions".into(), "on".into()),
                ("num_threads".into(), worker_threads().to_string()),
                ("detail_enabled".into(), "no".into()),
                ("cas_enabled".into(), "yes".into()),
                ("binding_protocol".into(), "auto-negotiate".into()),
                (
                    "auth_enabled_sasl".into(),
                    if s.no_auth { "no" } else { "yes" }.into(),
                ),
                (
                    "auth_enabled_ascii".into(),
                    if s.no_auth { "no" } else { "yes" }.into(),
                ),
                ("item_size_max".into(), s.max_item_size.to_string()),
                ("flush_enabled".into(), "yes".into()),
                ("auth_timeout".into(), s.auth_timeout.as_secs().to_string()),
                ("key_max_length".into(), MAX_KEY_LEN.to_string()),
            ],
            // memcached reads only the first word, except for `detail`.
            Some(group) => match group.split(' ').collect::<Vec<_>>().as_slice() {
                ["reset", ..] => {
                    tenant.stats.reset();
                    return Response::Reset;
                }
                // Per-key detail is not kept: on and off are accepted, and
                // the dump is empty, as memcached's is before any detail.
                ["detail", "on" | "off", ..] => return Response::Ok,
                ["detail", "dump", ..] => Vec::new(),
                ["detail", ..] => {
                    return Response::Error(ErrorReply::Client(
                        "usage: stats detail on|off|dump".into(),
                    ))
                }
                ["sizes", ..] => vec![("sizes_status".into(), "disabled".into())],
                // Slab and connection tables have no meaning for the
                // per-cache store: answered empty (README, "Differences").
                ["items" | "slabs" | "conns", ..] => Vec::new(),
                _ => return Response::Error(ErrorReply::UnknownCommand),
            },
        };
        Response::Stats(pairs)
    }

    /// Publish per-cache gauges and counters before a scrape.
    pub(super) fn refresh_metrics(&self) {
        for tenant in self.tenants().iter() {
            let cache = tenant.id.clone();
            let usage = tenant.store.usage();
            let st = &tenant.stats;
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            metrics::gauge!(m::NODE_CACHE_ITEMS, "cache" => cache.clone()).set(usage.items as f64);
            metrics::gauge!(m::NODE_CACHE_USED_BYTES, "cache" => cache.clone())
                .set(usage.bytes as f64);
            metrics::gauge!(m::NODE_CACHE_LIMIT_BYTES, "cache" => cache.clone())
                .set(usage.limit as f64);
            metrics::gauge!(m::NODE_CACHE_CONNECTIONS, "cache" => cache.clone())
                .set(load(&st.curr_connections) as f64);
            metrics::counter!(m::NODE_CACHE_EVICTIONS_TOTAL, "cache" => cache.clone())
                .absolute(load(&st.evictions));
            metrics::counter!(m::NODE_CACHE_EXPIRED_TOTAL, "cache" => cache.clone())
                .absolute(load(&st.expired));
            metrics::counter!(m::NODE_CACHE_READ_BYTES_TOTAL, "cache" => cache.clone())
                .absolute(load(&st.bytes_read));
            metrics::counter!(m::NODE_CACHE_WRITTEN_BYTES_TOTAL, "cache" => cache.clone())
                .absolute(load(&st.bytes_written));
            metrics::counter!(m::NODE_AUTH_FAILURES_TOTAL, "cache" => cache.clone())
                .absolute(load(&st.auth_errors));
            for (name, value) in st.counters() {
                if name.starts_with("cmd_")
                    || name.ends_with("_hits")
                    || name.ends_with("_misses")
                    || name == "cas_badval"
                {
                    metrics::counter!(m::NODE_CACHE_COMMANDS_TOTAL, "cache" => cache.clone(), "stat" => name)
                        .absolute(value);
                }
            }
        }
        metrics::counter!(m::NODE_AUTH_FAILURES_TOTAL, "cache" => "")
            .absolute(self.anonymous_auth_failures.load(Ordering::Relaxed));
    }
}

fn worker_threads() -> usize {
    tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_workers())
        .unwrap_or(1)
}
