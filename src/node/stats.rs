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
                    _ => counter(&counters, name),
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
                    names
                        .iter()
                        .map(|&n| (n.to_string(), counter(&counters, n).to_string()))
                        .collect()
                };
                pairs.extend(named(MEMCACHED_ORDER_HEAD));
                pairs.push(("limit_maxbytes".into(), usage.limit.to_string()));
                pairs.push(("threads".into(), s.threads.to_string()));
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
            Some(g) if g.split(' ').next() == Some("settings") => self.settings_pairs(tenant),
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
                ["items", ..] => items_pairs(tenant),
                ["slabs", ..] => slabs_pairs(tenant),
                // Connections are not kept per cache, and listing another
                // tenant's would leak them: answered empty (docs/node.md).
                ["conns", ..] => Vec::new(),
                ["cachedump", rest @ ..] => return cachedump(tenant, rest),
                _ => return Response::Error(ErrorReply::UnknownCommand),
            },
        };
        Response::Stats(pairs)
    }

    /// `stats settings`: every name memcached 1.6.18 reports, in its order,
    /// with what it means for this node and cache (docs/node.md), then
    /// memgate's own two.
    fn settings_pairs(&self, tenant: &Tenant) -> Vec<(String, String)> {
        let s = &self.settings;
        let yes_no = |on: bool| if on { "yes" } else { "no" }.to_string();
        let mut pairs: Vec<(String, String)> = vec![
            ("maxbytes".into(), tenant.store.usage().limit.to_string()),
            ("maxconns".into(), s.max_connections.to_string()),
        ];
        for &(name, value) in FIXED_SETTINGS_HEAD {
            pairs.push((name.into(), value.into()));
        }
        pairs.extend([
            ("num_threads".into(), s.threads.to_string()),
            ("num_threads_per_udp".into(), s.threads.to_string()),
            ("stat_key_prefix".into(), ":".into()),
            ("detail_enabled".into(), "no".into()),
            ("reqs_per_event".into(), "0".into()),
            ("cas_enabled".into(), "yes".into()),
            ("tcp_backlog".into(), "1024".into()),
            ("binding_protocol".into(), "auto-negotiate".into()),
            ("auth_enabled_sasl".into(), yes_no(!s.no_auth)),
            ("auth_enabled_ascii".into(), yes_no(!s.no_auth)),
            ("item_size_max".into(), s.max_item_size.to_string()),
        ]);
        for &(name, value) in FIXED_SETTINGS_TAIL {
            pairs.push((name.into(), value.into()));
        }
        pairs.push(("ssl_enabled".into(), yes_no(s.tls)));
        for &(name, value) in FIXED_SETTINGS_SSL {
            pairs.push((name.into(), value.into()));
        }
        pairs.push(("auth_timeout".into(), s.auth_timeout.as_secs().to_string()));
        pairs.push(("key_max_length".into(), MAX_KEY_LEN.to_string()));
        pairs
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

/// `stats settings` names between `maxconns` and `num_threads`, with the
/// values that describe memgate: no UDP, no unix socket, no `shutdown`
/// command, `verbosity` accepted and ignored, no slab classes (growth 1,
/// chunk 0), and the per-listener port and interface named by none.
const FIXED_SETTINGS_HEAD: &[(&str, &str)] = &[
    ("tcpport", "0"),
    ("udpport", "0"),
    ("inter", "NULL"),
    ("verbosity", "0"),
    ("oldest", "0"),
    ("evictions", "on"),
    ("domain_socket", "NULL"),
    ("umask", "0"),
    ("shutdown_command", "no"),
    ("growth_factor", "1.00"),
    ("chunk_size", "0"),
];

/// `stats settings` names after `item_size_max`: memgate has no slab
/// rebalancing, LRU crawler, segmented LRU, extstore or watchers, and
/// flushes lazily as memcached does; items are hashed with the store's own
/// hasher, not murmur3.
const FIXED_SETTINGS_TAIL: &[(&str, &str)] = &[
    ("maxconns_fast", "yes"),
    ("hashpower_init", "0"),
    ("slab_reassign", "no"),
    ("slab_automove", "0"),
    ("slab_automove_ratio", "0.00"),
    ("slab_automove_window", "0"),
    ("slab_chunk_max", "0"),
    ("lru_crawler", "no"),
    ("lru_crawler_sleep", "0"),
    ("lru_crawler_tocrawl", "0"),
    ("tail_repair_time", "0"),
    ("flush_enabled", "yes"),
    ("dump_enabled", "no"),
    ("hash_algorithm", "memgate"),
    ("lru_maintainer_thread", "no"),
    ("lru_segmented", "no"),
    ("hot_lru_pct", "0"),
    ("warm_lru_pct", "0"),
    ("hot_max_factor", "0.00"),
    ("warm_max_factor", "0.00"),
    ("temp_lru", "no"),
    ("temporary_ttl", "0"),
    ("idle_timeout", "0"),
    ("watcher_logbuf_size", "0"),
    ("worker_logbuf_size", "0"),
    ("read_buf_mem_limit", "0"),
    ("track_sizes", "no"),
    ("inline_ascii_response", "no"),
    ("ext_item_size", "0"),
    ("ext_item_age", "0"),
    ("ext_low_ttl", "0"),
    ("ext_recache_rate", "0"),
    ("ext_wbuf_size", "0"),
    ("ext_compact_under", "0"),
    ("ext_drop_under", "0"),
    ("ext_max_sleep", "0"),
    ("ext_max_frag", "0.00"),
    ("slab_automove_freeratio", "0.000"),
    ("ext_drop_unread", "no"),
];

/// `stats settings` names after `ssl_enabled`: the node's certificate and
/// key are flags (docs/node.md), not reported, and it verifies no client
/// certificate.
const FIXED_SETTINGS_SSL: &[(&str, &str)] = &[
    ("ssl_chain_cert", "(null)"),
    ("ssl_key", "(null)"),
    ("ssl_verify_mode", "0"),
    ("ssl_keyformat", "1"),
    ("ssl_ciphers", "NULL"),
    ("ssl_ca_cert", "NULL"),
    ("ssl_session_cache", "no"),
    ("ssl_kernel_tls", "no"),
    ("ssl_min_version", "tlsv1.2"),
    ("num_napi_ids", "(null)"),
    ("memory_file", "(null)"),
];

/// `stats items` for the cache: its store has no slab classes, so all its
/// items are class 1, with what the store counts (no LRU ages or queues).
/// Nothing when the cache is empty, as memcached lists no empty class.
fn items_pairs(tenant: &Tenant) -> Vec<(String, String)> {
    let usage = tenant.store.usage();
    if usage.items == 0 {
        return Vec::new();
    }
    let evicted = tenant.stats.evictions.load(Ordering::Relaxed);
    [
        ("number", usage.items),
        ("mem_requested", usage.bytes),
        ("evicted", evicted),
    ]
    .into_iter()
    .map(|(name, value)| (format!("items:1:{name}"), value.to_string()))
    .collect()
}

/// memcached's slab classes are 0..64; a class id past them is refused.
const SLAB_CLASSES: u32 = 64;

/// `stats cachedump <class> <limit>` for the cache: its items are all in
/// class 1 (see [`items_pairs`]); any other class is empty. Errors as
/// memcached words them.
fn cachedump(tenant: &Tenant, args: &[&str]) -> Response {
    let bad = || Response::Error(ErrorReply::Client("bad command line format".into()));
    let [class, limit, ..] = args else {
        return Response::Error(ErrorReply::Client("bad command line".into()));
    };
    let (Ok(class), Ok(limit)) = (class.parse::<u32>(), limit.parse::<u32>()) else {
        return bad();
    };
    if class >= SLAB_CLASSES {
        return Response::Error(ErrorReply::Client("Illegal slab id".into()));
    }
    if class != 1 {
        return Response::Dump(Vec::new());
    }
    Response::Dump(tenant.store.dump(limit as usize, unix_now()))
}

/// `stats slabs` for the cache: one class (see [`items_pairs`]) and its
/// per-class hit counters, the cache's. No `total_malloced`: the store
/// allocates segments shared by items of every size, and what it reports
/// is the items' charge, not what was allocated.
fn slabs_pairs(tenant: &Tenant) -> Vec<(String, String)> {
    let usage = tenant.store.usage();
    let mut pairs = Vec::new();
    if usage.items > 0 {
        let counters = tenant.stats.counters();
        pairs.push(("1:used_chunks".to_string(), usage.items.to_string()));
        for name in [
            "get_hits",
            "cmd_set",
            "delete_hits",
            "incr_hits",
            "decr_hits",
            "cas_hits",
            "cas_badval",
            "touch_hits",
        ] {
            pairs.push((format!("1:{name}"), counter(&counters, name).to_string()));
        }
    }
    let active = u64::from(usage.items > 0);
    pairs.push(("active_slabs".into(), active.to_string()));
    pairs
}

/// The counter `name` among a cache's `counters` (0 if it has none).
fn counter(counters: &[(&'static str, u64)], name: &str) -> u64 {
    counters
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| *v)
}
