//! The wall clock, in the two units the crate stores: unix seconds (item
//! expiry, last activity, `stats time`) and unix milliseconds (analytics
//! history timestamps).
//!
//! A leaf: it imports nothing of the crate, so any module may read the clock
//! without importing a role. The sans-IO protocol code never calls it; its
//! callers pass `now` in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch; 0 if the clock is set before it.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the unix epoch; 0 if the clock is set before it.
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
