//! Per-cache counters, shared by every connection logged in to the cache.
//!
//! Plain relaxed atomics: each counter is independent, and `stats` is a
//! snapshot, not a transaction, exactly as in memcached.

use std::sync::atomic::{AtomicU64, Ordering};

/// Declares the counter struct and its ordered `(name, value)` listing in one
/// place, so a new counter cannot be forgotten in `stats` output.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Counters of one cache, named as memcached's `stats` names them.
        #[derive(Debug, Default)]
        pub struct CacheStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        impl CacheStats {
            /// Every counter with its memcached name, in a stable order.
            pub fn counters(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }

            /// `stats reset`: zero every counter but the gauge of open
            /// connections, as memcached's reset leaves `curr_connections`.
            pub fn reset(&self) {
                $(if stringify!($name) != "curr_connections" {
                    self.$name.store(0, Ordering::Relaxed);
                })*
            }
        }
    };
}

counters! {
    /// Connections open now.
    curr_connections,
    /// Connections ever logged in to this cache.
    total_connections,
    /// SASL/ASCII authentication attempts.
    auth_cmds,
    /// Failed authentication attempts.
    auth_errors,
    bytes_read,
    bytes_written,
    cmd_get,
    cmd_set,
    cmd_delete,
    cmd_flush,
    cmd_touch,
    get_hits,
    get_misses,
    get_expired,
    get_flushed,
    delete_hits,
    delete_misses,
    incr_hits,
    incr_misses,
    decr_hits,
    decr_misses,
    touch_hits,
    touch_misses,
    cas_hits,
    cas_misses,
    cas_badval,
    total_items,
    evictions,
    expired,
}

impl CacheStats {
    /// Add `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Add one to a counter.
    #[inline]
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtract one, for gauges such as `curr_connections`.
    #[inline]
    pub fn decr(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_listed_by_memcached_name() {
        let s = CacheStats::default();
        CacheStats::incr(&s.get_hits);
        CacheStats::add(&s.bytes_read, 10);
        let all = s.counters();
        assert!(all.contains(&("get_hits", 1)));
        assert!(all.contains(&("bytes_read", 10)));
        assert!(all.contains(&("evictions", 0)));
        assert_eq!(all.first().map(|c| c.0), Some("curr_connections"));
    }

    #[test]
    fn reset_keeps_only_the_connection_gauge() {
        let s = CacheStats::default();
        CacheStats::incr(&s.curr_connections);
        CacheStats::incr(&s.get_hits);
        s.reset();
        assert!(s.counters().contains(&("get_hits", 0)));
        assert!(s.counters().contains(&("curr_connections", 1)));
    }
}
