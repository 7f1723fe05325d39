//! Warm-up after a reload: keys whose node changed are still found on the
//! node they left, and no old value comes back.
//!
//! A reload that changes the ring moves some keys to another node, which
//! does not have them. For a while after it (`--warmup`), the sidecar keeps
//! the previous ring and treats a moved key as living on two nodes: a
//! *primary*, read first and written, and a *secondary*, read when the
//! primary misses and cleared after every write:
//!
//! | phase (time since the reload)           | primary  | secondary | reads fall back |
//! | --------------------------------------- | -------- | --------- | --------------- |
//! | settle (`--warmup-settle`)              | previous | new       | yes             |
//! | window (`--warmup` after the settle)    | new      | previous  | yes             |
//! | closing (one more settle)               | new      | previous  | no              |
//! | over                                    | new      | none      | no              |
//!
//! Every write of a moved key (store, arithmetic, delete, touch-free meta
//! vivify) goes to the primary and then deletes the key on the secondary,
//! before the client hears the primary's reply. So after any acknowledged
//! write only one of the two holds the key: a read (primary, then
//! secondary) sees the newest value or misses, and a deleted key does not
//! come back from the node it left. Writing first and deleting second
//! (never both at once) also keeps two concurrent writers through two
//! sidecars from leaving both values behind: whichever deletes last removes
//! the other's.
//!
//! The settle phase is for the other sidecars of the same app, which reload
//! at slightly different times: one that has not reloaded yet reads and
//! writes the previous node, and so does one in its settle phase. Those in
//! the window read the new node first, and they only begin once every
//! sidecar reloaded within a settle of each other has stopped writing the
//! previous node alone. The closing phase mirrors it at the end: the last
//! sidecar to reload still falls back to the previous node, so the first
//! must keep clearing it until then.
//!
//! A secondary that fails or is down is *abandoned* for the rest of this
//! warm-up: never read again and no longer cleared. A node that missed
//! clears must not be read, and not waiting for it keeps a dead node's cost
//! at today's timeout rules. A key whose previous node is abandoned is
//! served by the new ring alone.
//!
//! With memgate nodes, a hit read from the node a key left is copied to its
//! new node, as an add that the node refuses while the key has a tombstone
//! (`node::tombstones`): every delete the warm-up makes on a new node, and
//! every write there that may leave the key absent, leaves one, so a copy
//! that read the item before such a write cannot land after it
//! (`proxy::session::moved`). A new node that may have missed a tombstone
//! stops copies for the rest of the warm-up. memcached has no tombstones:
//! with it nothing is copied, and the window is what keeps keys warm.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pool::Upstream;
use super::ring::Ring;
use crate::metrics as m;

/// Where a warm-up stands, by the time since its reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The previous node is primary.
    Settle,
    /// The new node is primary; reads fall back to the previous one.
    Window,
    /// The new node is primary; writes still clear the previous one.
    Closing,
    /// The previous ring is forgotten.
    Over,
}

/// The two nodes a moved key lives on during a warm-up.
pub struct Moved<'a> {
    pub primary: &'a Arc<Upstream>,
    /// None once it is abandoned.
    pub secondary: Option<&'a Arc<Upstream>>,
    /// Whether a miss on the primary is read again from the secondary.
    pub fallback: bool,
    /// Whether the primary is the key's new node (after the settle phase).
    pub new_is_primary: bool,
}

/// The previous ring, kept for a while after a reload.
pub struct Warmup {
    ring: Ring,
    /// The previous ring's nodes, in its order.
    nodes: Vec<Arc<Upstream>>,
    began: Instant,
    settle: Duration,
    window: Duration,
    /// Nodes of either ring given up on for this warm-up.
    abandoned: Vec<(Arc<Upstream>, AtomicBool)>,
    /// A tombstone may be missing on a new node: copy nothing more.
    copies_stopped: AtomicBool,
}

impl Warmup {
    /// A warm-up from the ring `ring` over `nodes` (before the reload) to a
    /// cluster over `current`, starting now.
    pub fn new(
        ring: Ring,
        nodes: Vec<Arc<Upstream>>,
        current: &[Arc<Upstream>],
        settle: Duration,
        window: Duration,
    ) -> Warmup {
        let mut abandoned: Vec<(Arc<Upstream>, AtomicBool)> = Vec::new();
        for node in nodes.iter().chain(current) {
            if !abandoned.iter().any(|(n, _)| Arc::ptr_eq(n, node)) {
                abandoned.push((Arc::clone(node), AtomicBool::new(false)));
            }
        }
        Warmup {
            ring,
            nodes,
            began: Instant::now(),
            settle,
            window,
            abandoned,
            copies_stopped: AtomicBool::new(false),
        }
    }

    /// Whether hits read from the node a key left may still be copied to
    /// its new node (`proxy::session::moved`).
    pub fn copies_allowed(&self) -> bool {
        !self.copies_stopped.load(Ordering::Relaxed)
    }

    /// Copy nothing more in this warm-up: a write could not leave its
    /// tombstone, so a copy could land after it.
    pub fn stop_copies(&self) {
        if !self.copies_stopped.swap(true, Ordering::Relaxed) {
            tracing::warn!("warm-up: a tombstone could not be left; no more copies");
        }
    }

    /// Whether a reload from `ring` over `nodes` to `next_ring` over `next`
    /// moves any key to another node.
    pub fn needed(
        ring: &Ring,
        nodes: &[Arc<Upstream>],
        next_ring: &Ring,
        next: &[Arc<Upstream>],
    ) -> bool {
        !ring.same_placement(next_ring)
            || nodes.len() != next.len()
            || nodes.iter().zip(next).any(|(a, b)| a.target != b.target)
    }

    /// When the whole warm-up ends, closing phase included.
    pub fn ends(&self) -> Instant {
        self.began + self.settle + self.window + self.settle
    }

    /// The nodes of the previous ring (flush_all must reach them too, or a
    /// fallback would read what the flush removed everywhere else).
    pub fn previous_nodes(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.nodes.iter().filter(|node| !self.is_abandoned(node))
    }

    pub fn phase(&self, now: Instant) -> Phase {
        let since = now.saturating_duration_since(self.began);
        if since < self.settle {
            Phase::Settle
        } else if since < self.settle + self.window {
            Phase::Window
        } else if since < self.settle + self.window + self.settle {
            Phase::Closing
        } else {
            Phase::Over
        }
    }

    /// The two nodes of `key`, whose node is now `home`, if it moved and the
    /// warm-up still covers it.
    pub fn moved<'a>(&'a self, key: &[u8], home: &'a Arc<Upstream>) -> Option<Moved<'a>> {
        let phase = self.phase(Instant::now());
        if phase == Phase::Over || self.nodes.is_empty() {
            return None;
        }
        let previous = &self.nodes[self.ring.locate(key) % self.nodes.len()];
        // The same node under a new login is not a move.
        if previous.target == home.target || self.is_abandoned(previous) {
            return None;
        }
        if !previous.health.is_up() {
            self.abandon(previous);
            return None;
        }
        let moved = match phase {
            Phase::Settle => Moved {
                primary: previous,
                secondary: (!self.is_abandoned(home)).then_some(home),
                fallback: true,
                new_is_primary: false,
            },
            Phase::Window | Phase::Closing => Moved {
                primary: home,
                secondary: Some(previous),
                fallback: phase == Phase::Window,
                new_is_primary: true,
            },
            Phase::Over => return None,
        };
        Some(moved)
    }

    /// The nodes that kept `key` under the previous ring with `replicas`
    /// per key, in its order, but for those given up on.
    pub fn previous_replicas(&self, key: &[u8], replicas: usize) -> Vec<&Arc<Upstream>> {
        if self.nodes.is_empty() {
            return Vec::new();
        }
        let indices = self.ring.replicas(key, replicas);
        indices
            .iter()
            .map(|i| &self.nodes[i % self.nodes.len()])
            .filter(|node| !self.is_abandoned(node))
            .collect()
    }

    pub fn is_abandoned(&self, node: &Arc<Upstream>) -> bool {
        self.abandoned
            .iter()
            .find(|(n, _)| Arc::ptr_eq(n, node))
            .is_some_and(|(_, gone)| gone.load(Ordering::Relaxed))
    }

    /// Give up on `node` for this warm-up: it missed a clear, or is down.
    pub fn abandon(&self, node: &Arc<Upstream>) {
        if let Some((_, gone)) = self.abandoned.iter().find(|(n, _)| Arc::ptr_eq(n, node)) {
            if !gone.swap(true, Ordering::Relaxed) {
                metrics::counter!(m::PROXY_WARMUP_ABANDONED_TOTAL, "node" => node.target.name.clone())
                    .increment(1);
                tracing::warn!(
                    node = %node.target.name,
                    "warm-up: node failed; its moved keys are served by the new ring alone"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ring::parse_server_entry;
    use crate::proxy::upstream::Target;

    fn upstream(name: &str) -> Arc<Upstream> {
        let target = Target {
            name: name.into(),
            addr: "127.0.0.1:1".into(),
            server_name: rustls_pki_types::ServerName::try_from("localhost").unwrap(),
        };
        Arc::new(Upstream::new(target, 1, 2))
    }

    fn ring(names: &[&str]) -> Ring {
        let specs: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| parse_server_entry(&format!("{n}=10.0.0.{}:11211", i + 1)).unwrap())
            .collect();
        Ring::new(&specs).unwrap()
    }

    /// A key that moves from `a` to the added `c`: which node is primary,
    /// which secondary, through every phase, and nothing for keys that
    /// stayed.
    #[test]
    fn phases_swap_primary_and_secondary() {
        let (a, b, c) = (upstream("a"), upstream("b"), upstream("c"));
        let old = vec![Arc::clone(&a), Arc::clone(&b)];
        let new = ring(&["a", "b", "c"]);
        let current = vec![Arc::clone(&a), Arc::clone(&b), Arc::clone(&c)];
        let settle = Duration::from_millis(40);
        let window = Duration::from_millis(40);
        let warm = Warmup::new(ring(&["a", "b"]), old, &current, settle, window);
        let key = (0..10_000)
            .map(|i| format!("key{i}"))
            .find(|k| new.locate(k.as_bytes()) == 2 && ring(&["a", "b"]).locate(k.as_bytes()) == 0)
            .expect("some key moves from a to c");
        let stays = (0..10_000)
            .map(|i| format!("key{i}"))
            .find(|k| new.locate(k.as_bytes()) == 0 && ring(&["a", "b"]).locate(k.as_bytes()) == 0)
            .expect("some key stays on a");
        assert!(warm.moved(stays.as_bytes(), &a).is_none());

        let moved = warm.moved(key.as_bytes(), &c).expect("moved");
        assert_eq!(warm.phase(Instant::now()), Phase::Settle);
        assert!(Arc::ptr_eq(moved.primary, &a));
        assert!(Arc::ptr_eq(moved.secondary.unwrap(), &c));
        assert!(moved.fallback);

        std::thread::sleep(settle);
        let moved = warm.moved(key.as_bytes(), &c).expect("moved");
        assert_eq!(warm.phase(Instant::now()), Phase::Window);
        assert!(Arc::ptr_eq(moved.primary, &c));
        assert!(Arc::ptr_eq(moved.secondary.unwrap(), &a));
        assert!(moved.fallback);

        std::thread::sleep(window);
        let moved = warm.moved(key.as_bytes(), &c).expect("moved");
        assert_eq!(warm.phase(Instant::now()), Phase::Closing);
        assert!(
            !moved.fallback,
            "closing: writes clear, reads do not fall back"
        );

        std::thread::sleep(settle);
        assert_eq!(warm.phase(Instant::now()), Phase::Over);
        assert!(warm.moved(key.as_bytes(), &c).is_none());
    }

    /// A previous node given up on is never read again: its keys go to the
    /// new ring alone, and flush_all no longer reaches it.
    #[test]
    fn an_abandoned_node_is_left_alone() {
        let (a, b, c) = (upstream("a"), upstream("b"), upstream("c"));
        let current = vec![Arc::clone(&a), Arc::clone(&b), Arc::clone(&c)];
        let warm = Warmup::new(
            ring(&["a", "b"]),
            vec![Arc::clone(&a), Arc::clone(&b)],
            &current,
            Duration::ZERO,
            Duration::from_secs(60),
        );
        let new = ring(&["a", "b", "c"]);
        let key = (0..10_000)
            .map(|i| format!("key{i}"))
            .find(|k| new.locate(k.as_bytes()) == 2 && ring(&["a", "b"]).locate(k.as_bytes()) == 1)
            .expect("some key moves from b to c");
        assert!(warm.moved(key.as_bytes(), &c).is_some());
        warm.abandon(&b);
        assert!(warm.moved(key.as_bytes(), &c).is_none());
        let reached: Vec<_> = warm
            .previous_nodes()
            .map(|n| n.target.name.clone())
            .collect();
        assert_eq!(reached, ["a"]);
    }
}
