//! `--disable-after DUR`: a cache with no logins and no commands on any
//! node for that long is disabled on every node (memcached logins then
//! fail, as the hosted service does with idle development caches). The
//! owner enables it again through the API or the dashboard; enabling counts
//! as activity on the nodes, so it is not disabled again at once.
//!
//! Each node reports every cache's last activity (`last_active` in
//! `GET /admin/caches`); a node counts its own start as activity, so a
//! restart never makes a cache look idle. Nothing is disabled while some
//! node cannot be asked: it might have seen the activity.

use std::collections::HashMap;
use std::time::Duration;

use super::{Change, Service};
use crate::clock::unix_now;
use crate::metrics as m;

/// Per cache: the latest activity on any node, and whether some node still
/// has it enabled.
fn idle_caches(seen: &HashMap<String, (u64, bool)>, now: u64, idle: Duration) -> Vec<String> {
    let mut out: Vec<String> = seen
        .iter()
        .filter(|(_, &(last, enabled))| enabled && now.saturating_sub(last) >= idle.as_secs())
        .map(|(id, _)| id.clone())
        .collect();
    out.sort();
    out
}

/// Disable the caches idle for `idle`; returns how many were disabled.
pub async fn sweep(service: &Service, idle: Duration) -> usize {
    let mut seen: HashMap<String, (u64, bool)> = HashMap::new();
    for node in &service.nodes {
        let view = match service.caches_of(node).await {
            Ok(view) => view,
            Err(error) => {
                tracing::debug!(%error, "idle caches not checked: a node is not answering");
                return 0;
            }
        };
        for cache in view.caches {
            let entry = seen.entry(cache.id).or_insert((0, false));
            entry.0 = entry.0.max(cache.last_active);
            entry.1 |= !cache.disabled;
        }
    }
    let mut disabled = 0;
    for cache_id in idle_caches(&seen, unix_now(), idle) {
        let change = Change::SetDisabled {
            cache_id: cache_id.clone(),
            disabled: true,
        };
        match service.apply_everywhere(change).await {
            Ok(behind) => {
                tracing::info!(cache = %cache_id, idle_secs = idle.as_secs(), ?behind, "cache disabled for inactivity");
                metrics::counter!(m::ANALYTICS_CACHES_DISABLED_TOTAL).increment(1);
                disabled += 1;
            }
            Err(refused) => {
                tracing::error!(cache = %cache_id, ?refused, "nodes refused to disable an idle cache");
            }
        }
    }
    disabled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_enabled_caches_idle_long_enough() {
        let seen = HashMap::from([
            ("old".to_string(), (100, true)),
            ("fresh".to_string(), (990, true)),
            ("already".to_string(), (100, false)),
            ("edge".to_string(), (900, true)),
        ]);
        assert_eq!(
            idle_caches(&seen, 1000, Duration::from_secs(100)),
            ["edge", "old"]
        );
    }
}
