//! `stats` through the sidecar: one request to every node, one reply.
//! Counters are summed across the ring; `stats settings` reports what the
//! sidecar itself enforces (docs/proxy.md), which a sum of the nodes'
//! settings would misstate: three nodes' 1 MiB items are not a 3 MiB limit.

use crate::protocol::request::StatsReply;
use crate::protocol::{Response, MAX_KEY_LEN};

/// The nodes' replies to `stats [group]` as one reply; `max_item_size` is
/// the sidecar's own (`--max-item-size`).
pub(super) fn merge(
    results: Vec<Response>,
    group: Option<&[u8]>,
    max_item_size: usize,
) -> Response {
    if StatsReply::of(group) == StatsReply::Items {
        return merge_items(results, group);
    }
    let settings = group.is_some_and(|g| g.split(|&b| b == b' ').next() == Some(b"settings"));
    // A node's error is the reply, as for any other group.
    if !settings || results.iter().any(|r| !matches!(r, Response::Stats(_))) {
        return merge_stats(results);
    }
    let nodes: Vec<Vec<(String, String)>> = results
        .into_iter()
        .filter_map(|r| match r {
            Response::Stats(pairs) => Some(pairs),
            _ => None,
        })
        .collect();
    let capacity: u64 = nodes
        .iter()
        .filter_map(|pairs| pairs.iter().find(|(n, _)| n == "maxbytes"))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    let first = nodes.into_iter().next().unwrap_or_default();
    Response::Stats(sidecar_settings(first, capacity, max_item_size))
}

/// One node's settings, with what the sidecar enforces in their place:
/// the item and key limits it parses with, its own threads and connection
/// limit, no login (the sidecar logs in for its clients), and the ring's
/// capacity as `maxbytes`. Settings the sidecar does not have (the node's
/// login deadline) are left out.
fn sidecar_settings(
    node: Vec<(String, String)>,
    capacity: u64,
    max_item_size: usize,
) -> Vec<(String, String)> {
    let threads = tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_workers())
        .unwrap_or(1);
    node.into_iter()
        .filter(|(name, _)| name != "auth_timeout")
        .filter_map(|(name, value)| {
            let value = match name.as_str() {
                "maxbytes" => capacity.to_string(),
                "maxconns" => open_files_limit()?.to_string(),
                "num_threads" | "num_threads_per_udp" => threads.to_string(),
                "auth_enabled_sasl" | "auth_enabled_ascii" => "no".into(),
                "item_size_max" => max_item_size.to_string(),
                "key_max_length" => MAX_KEY_LEN.to_string(),
                _ => value,
            };
            Some((name, value))
        })
        .collect()
}

/// The sidecar takes every client connection it can open: what bounds them
/// is its soft limit of open files, from /proc/self/limits (Linux).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `stats cachedump <class> <limit>` across nodes: every node's items in
/// ring order, at most `limit` of them in all (0: no limit, as memcached
/// reads it). Each node caps its own list at 2 MiB of lines. A node's error
/// (the arguments were wrong, so every node says the same) is the reply.
fn merge_items(results: Vec<Response>, group: Option<&[u8]>) -> Response {
    if let Some(index) = results.iter().position(|r| !matches!(r, Response::Dump(_))) {
        return results.into_iter().nth(index).unwrap_or(Response::Ok);
    }
    let limit = group
        .and_then(|g| g.split(|&b| b == b' ').nth(2))
        .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(usize::MAX);
    let mut merged = Vec::new();
    for result in results {
        if let Response::Dump(items) = result {
            merged.extend(items.into_iter().take(limit - merged.len()));
        }
    }
    Response::Dump(merged)
}

/// `stats` across nodes: numeric counters summed, the rest from the first
/// node; counters of what the sidecar sends every node, the largest.
fn merge_stats(results: Vec<Response>) -> Response {
    // A client's `flush_all` reaches every node, and each counts it: the
    // sum would count it once per node, where the client made one
    // (memcached's t/binary.t checks it goes up by one).
    const BROADCAST: &[&str] = &["cmd_flush"];
    const NOT_SUMMED: &[&str] = &[
        "pid",
        "uptime",
        "time",
        "version",
        "pointer_size",
        "threads",
        "max_connections",
    ];
    // A node that failed is what the client hears, before any node's
    // success; `stats reset` and `stats detail on|off` answer RESET or OK.
    if let Some(index) = results
        .iter()
        .position(|r| matches!(r, Response::Error(_)))
        .or_else(|| {
            results
                .iter()
                .position(|r| !matches!(r, Response::Stats(_)))
        })
    {
        return results.into_iter().nth(index).unwrap_or(Response::Ok);
    }
    let mut merged: Vec<(String, String)> = Vec::new();
    for result in results {
        let Response::Stats(pairs) = result else {
            continue;
        };
        for (name, value) in pairs {
            match merged.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) if !NOT_SUMMED.contains(&name.as_str()) => {
                    if let (Ok(a), Ok(b)) = (total.parse::<u64>(), value.parse::<u64>()) {
                        let merged = match BROADCAST.contains(&name.as_str()) {
                            true => a.max(b),
                            false => a + b,
                        };
                        *total = merged.to_string();
                    }
                }
                Some(_) => {}
                None => merged.push((name, value)),
            }
        }
    }
    Response::Stats(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorReply;

    fn node(pairs: &[(&str, &str)]) -> Response {
        Response::Stats(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn value(reply: &Response, name: &str) -> Option<String> {
        match reply {
            Response::Stats(pairs) => pairs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn settings_are_what_the_sidecar_enforces_not_a_sum() {
        let settings = [
            ("maxbytes", "1000"),
            ("maxconns", "4096"),
            ("auth_enabled_sasl", "yes"),
            ("item_size_max", "1048576"),
            ("auth_timeout", "5"),
            ("key_max_length", "250"),
            ("evictions", "on"),
        ];
        let merged = merge(
            vec![node(&settings), node(&settings)],
            Some(b"settings"),
            2048,
        );
        assert_eq!(value(&merged, "item_size_max").as_deref(), Some("2048"));
        assert_eq!(value(&merged, "key_max_length").as_deref(), Some("250"));
        assert_eq!(
            value(&merged, "maxbytes").as_deref(),
            Some("2000"),
            "the ring's capacity"
        );
        assert_eq!(value(&merged, "auth_enabled_sasl").as_deref(), Some("no"));
        assert_eq!(value(&merged, "evictions").as_deref(), Some("on"));
        assert_eq!(
            value(&merged, "auth_timeout"),
            None,
            "the sidecar has no login deadline"
        );
        assert_eq!(
            value(&merged, "maxconns"),
            open_files_limit().map(|n| n.to_string())
        );
    }

    #[test]
    fn cachedump_lists_every_nodes_items_up_to_the_limit() {
        let dump = |keys: &[&str]| {
            Response::Dump(
                keys.iter()
                    .map(|k| (k.as_bytes().to_vec(), "[1 b; 0 s]".to_string()))
                    .collect(),
            )
        };
        let keys = |reply: Response| match reply {
            Response::Dump(items) => items
                .into_iter()
                .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let nodes = || vec![dump(&["a", "b"]), dump(&[]), dump(&["c"])];
        assert_eq!(
            keys(merge(nodes(), Some(b"cachedump 1 0"), 2048)),
            ["a", "b", "c"]
        );
        assert_eq!(
            keys(merge(nodes(), Some(b"cachedump 1 2"), 2048)),
            ["a", "b"]
        );
        assert_eq!(
            keys(merge(nodes(), Some(b"cachedump 1 3"), 2048)),
            ["a", "b", "c"]
        );
        let error = Response::Error(ErrorReply::Client("bad command line".into()));
        let merged = merge(vec![dump(&["a"]), error.clone()], Some(b"cachedump"), 2048);
        assert_eq!(merged, error);
    }

    #[test]
    fn other_groups_are_summed_and_an_error_wins() {
        let items = [("items:1:number", "3"), ("version", "x")];
        let merged = merge(vec![node(&items), node(&items)], Some(b"items"), 2048);
        assert_eq!(value(&merged, "items:1:number").as_deref(), Some("6"));
        let error = Response::Error(ErrorReply::UnknownCommand);
        let merged = merge(vec![node(&items), error.clone()], Some(b"settings"), 2048);
        assert_eq!(merged, error);
    }

    /// Each node counts every `flush_all` the sidecar sends them all: the
    /// ring made as many as its busiest node counted, not their sum.
    #[test]
    fn flushes_count_once_however_many_nodes_took_them() {
        let a = node(&[("cmd_flush", "3"), ("cmd_get", "10")]);
        let b = node(&[("cmd_flush", "3"), ("cmd_get", "5")]);
        let c = node(&[("cmd_flush", "2"), ("cmd_get", "1")]);
        let merged = merge(vec![a, b, c], None, 2048);
        assert_eq!(value(&merged, "cmd_flush").as_deref(), Some("3"));
        assert_eq!(value(&merged, "cmd_get").as_deref(), Some("16"));
    }
}
