//! A cache's curve from its nodes' curves, for `memgate analytics`.
//!
//! Ketama spreads a cache's keys over its nodes, so each node holds an
//! independent part of the cache with its own LRU, and the cache's size is
//! the sum of the nodes' shares. At a total size `X`, node `i` gets
//! `X × share_i / Σ share` and serves its own part of the reads, so the
//! cache's hit rate is the read-weighted average of the nodes' hit rates at
//! their shares of `X`.

use super::{points, Curve};

/// The cache-wide curve at `sizes` (total bytes), from `(curve, share)` per
/// node, where `share` is the node's current limit (or bytes) for the
/// cache. With no shares at all, the nodes count as equal.
pub fn merge(nodes: &[(Curve, u64)], sizes: &[u64]) -> Curve {
    let total_share: u64 = nodes.iter().map(|(_, share)| share).sum();
    let total_reads: u64 = nodes.iter().map(|(c, _)| c.accesses_total).sum();
    let fraction = |share: u64| {
        if total_share == 0 {
            1.0 / nodes.len() as f64
        } else {
            share as f64 / total_share as f64
        }
    };
    let points = points(sizes, |size| {
        if total_reads == 0 {
            return 0.0;
        }
        let hits: f64 = nodes
            .iter()
            .map(|(c, share)| {
                let part = (size as f64 * fraction(*share)).round() as u64;
                c.accesses_total as f64 * c.hit_rate_at(part)
            })
            .sum();
        hits / total_reads as f64
    });
    Curve {
        points,
        sampled_keys: nodes.iter().map(|(c, _)| c.sampled_keys).sum(),
        sampled_accesses: nodes.iter().map(|(c, _)| c.sampled_accesses).sum(),
        accesses_total: total_reads,
        // The coarsest node's rate: exact only if every node is.
        sample_rate: nodes
            .iter()
            .map(|(c, _)| c.sample_rate)
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.min(r))))
            .unwrap_or(0.0),
    }
}
