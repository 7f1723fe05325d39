//! What this sidecar trusts a node with when keys are kept on several nodes
//! (`--replicas N`), and the hints that make a returning node safe to read.
//!
//! A key lives on the first N distinct nodes of the ring (`Ring::replicas`).
//! A write goes to the first *trusted* one, the authority, and then to the
//! others (`proxy::session::replica`). A node that misses a write, because
//! it was down or because the write to it failed, holds an old value (or a
//! deleted one) for that key. Reading it would be wrong, so each node has a
//! trust state here:
//!
//! | state       | reads | authority for writes | gets the others' writes |
//! | ----------- | ----- | -------------------- | ----------------------- |
//! | trusted     | yes   | yes                  | yes                     |
//! | suspect     | no    | no                   | yes, once up            |
//! | quarantined | no    | no                   | yes                     |
//!
//! - A node that is marked down (`Health::downs` moved) or that failed a
//!   write becomes *suspect*. Every key written while it cannot be written
//!   is a *hint*: a key its copy of may be old.
//! - Once it is up again, the cluster's keeper (`Cluster::keeper`) replays
//!   the hints: it deletes each key there, leaving a tombstone on memgate
//!   nodes (`node::tombstones`) so that no copy in flight lands after it.
//!   Deleting rather than copying is enough: the key is read from the other
//!   replica, and copied back when read.
//! - Hints are bounded (`--hints`). Past the bound they are dropped and the
//!   node's part of the cache is flushed instead (`flush_all`, which on a
//!   memgate node empties this tenant's cache only). A flush costs the
//!   node's copies, not the key's value: the other replica has it.
//! - Then the node is *quarantined* for `--warmup-settle`: other sidecars
//!   of the same app saw it return at about the same time, and each replays
//!   its own hints; until they all have, the node may still hold a value one
//!   of them overwrote or deleted. Only then is it trusted again.
//!
//! The trust state and the hints belong to the node (`pool::Upstream`), so
//! a reload that keeps the node keeps them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::health::Health;
use crate::metrics as m;
use crate::protocol::request::Key;
use crate::sync::lock;

/// What a node may be used for now, by this sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read it, and let it order writes.
    Trusted,
    /// Up, but its copies may be old: give it the writes, never read it.
    WriteOnly,
    /// Down: hint every write.
    Down,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Trusted,
    Suspect,
    Quarantined { until: Instant },
}

/// What the keeper must do to a returning node before it can be trusted.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// Delete these keys there.
    Keys(Vec<Key>),
    /// Too many were hinted: flush the node's part of the cache.
    Flush,
}

/// One node's trust state and hints.
pub struct Trust {
    node: String,
    inner: Mutex<Inner>,
    /// Trusted and not warming, as of the `Health::downs` count beside it:
    /// what most reads ask, answered without the lock (`Trust::steady`).
    steady: AtomicBool,
    steady_downs: AtomicU64,
}

struct Inner {
    state: State,
    /// When it was last trusted again after missing writes: for a while
    /// after, a miss there is read again from the next replica
    /// (`Trust::warming`).
    trusted_again: Option<Instant>,
    /// `Health::downs` when last looked at.
    downs_seen: u64,
    hints: HashSet<Key>,
    /// Hints were dropped: only a flush makes the node safe.
    overflowed: bool,
    /// The keeper is replaying now.
    replaying: bool,
}

impl Trust {
    pub fn new(node: String) -> Trust {
        for event in ["written", "replayed", "overflowed"] {
            metrics::counter!(m::PROXY_HINTS_TOTAL, "node" => node.clone(), "event" => event)
                .increment(0);
        }
        Trust {
            node,
            steady: AtomicBool::new(false),
            steady_downs: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                state: State::Trusted,
                trusted_again: None,
                downs_seen: 0,
                hints: HashSet::new(),
                overflowed: false,
                replaying: false,
            }),
        }
    }

    /// What the node may be used for now.
    pub fn role(&self, health: &Health, now: Instant) -> Role {
        let mut inner = lock(&self.inner);
        inner.notice_downs(health);
        if !health.is_up() {
            return Role::Down;
        }
        match inner.state {
            State::Trusted => Role::Trusted,
            State::Quarantined { until } if now >= until => {
                inner.state = State::Trusted;
                inner.trusted_again = Some(now);
                drop(inner);
                tracing::info!(node = %self.node, "replica trusted again");
                Role::Trusted
            }
            State::Quarantined { .. } | State::Suspect => Role::WriteOnly,
        }
    }

    /// Whether the node is trusted and has been for `window` at least:
    /// its miss is the answer. Without a lock while that holds.
    pub fn steady(&self, health: &Health, now: Instant, window: Duration) -> bool {
        let downs = health.downs();
        if self.steady.load(Ordering::Acquire)
            && self.steady_downs.load(Ordering::Acquire) == downs
            && health.is_up()
        {
            return true;
        }
        if self.role(health, now) != Role::Trusted || self.warming(now, window) {
            return false;
        }
        let inner = lock(&self.inner);
        // Under the lock: a hint taken meanwhile (which clears the flag
        // under it) is not undone.
        if inner.state == State::Trusted && inner.downs_seen == downs {
            self.steady_downs.store(downs, Ordering::Release);
            self.steady.store(true, Ordering::Release);
        }
        true
    }

    /// Whether the node was trusted again less than `window` before `now`:
    /// it may lack keys the other replicas have (it returned empty, or its
    /// missed keys were deleted), so a miss there is read again from the
    /// next replica, and copied back. A node trusted all along has every
    /// key its replicas have, and its miss is the answer.
    pub fn warming(&self, now: Instant, window: Duration) -> bool {
        lock(&self.inner)
            .trusted_again
            .is_some_and(|at| now.saturating_duration_since(at) < window)
    }

    /// `key` was written while the node could not be: its copy there may be
    /// old until the keeper deletes it.
    pub fn hint(&self, key: &Key, capacity: usize) {
        let mut inner = lock(&self.inner);
        inner.state = State::Suspect;
        self.steady.store(false, Ordering::Release);
        if inner.overflowed || inner.hints.contains(key) {
            return;
        }
        if inner.hints.len() >= capacity {
            inner.hints = HashSet::new();
            inner.overflowed = true;
            drop(inner);
            metrics::counter!(m::PROXY_HINTS_TOTAL, "node" => self.node.clone(), "event" => "overflowed")
                .increment(1);
            tracing::warn!(node = %self.node, capacity, "too many hints: the node's part of the cache will be flushed when it returns");
            return;
        }
        inner.hints.insert(key.clone());
        drop(inner);
        metrics::counter!(m::PROXY_HINTS_TOTAL, "node" => self.node.clone(), "event" => "written")
            .increment(1);
    }

    /// The replay a suspect node that is up needs now, if the keeper is not
    /// already at it. Taken hints are the keeper's until it reports back.
    pub fn take_replay(&self, health: &Health) -> Option<Replay> {
        let mut inner = lock(&self.inner);
        inner.notice_downs(health);
        if inner.state != State::Suspect || inner.replaying || !health.is_up() {
            return None;
        }
        inner.replaying = true;
        Some(match inner.overflowed {
            true => Replay::Flush,
            false => Replay::Keys(inner.hints.drain().collect()),
        })
    }

    /// The keeper's replay ended as `outcome` says. With nothing left to
    /// replay, the node is quarantined until `settle` from now.
    pub fn replayed(&self, outcome: Replayed, health: &Health, settle: Duration) {
        let mut inner = lock(&self.inner);
        inner.replaying = false;
        let done = match outcome {
            Replayed::Flushed(ok) => {
                // The flush covered every hint dropped before it.
                if ok && inner.hints.is_empty() {
                    inner.overflowed = false;
                }
                ok
            }
            Replayed::Keys { deleted, failed } => {
                metrics::counter!(m::PROXY_HINTS_TOTAL, "node" => self.node.clone(), "event" => "replayed")
                    .increment(deleted as u64);
                let none_failed = failed.is_empty();
                if !inner.overflowed {
                    inner.hints.extend(failed);
                }
                none_failed
            }
        };
        inner.notice_downs(health);
        if done && inner.hints.is_empty() && !inner.overflowed && inner.state == State::Suspect {
            inner.state = State::Quarantined {
                until: Instant::now() + settle,
            };
            drop(inner);
            tracing::info!(node = %self.node, ?settle, "replica reconciled; quarantined");
        }
    }
}

/// How a replay ended.
pub enum Replayed {
    /// `deleted` keys were deleted; `failed` were not, and are hints again.
    Keys { deleted: usize, failed: Vec<Key> },
    /// The flush succeeded, or not.
    Flushed(bool),
}

impl Inner {
    /// A node marked down since it was last looked at may have missed any
    /// write, this sidecar's or another's: suspect.
    fn notice_downs(&mut self, health: &Health) {
        let downs = health.downs();
        if downs != self.downs_seen {
            self.downs_seen = downs;
            self.state = State::Suspect;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Key {
        Key::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_node_that_was_down_is_read_again_only_after_replay_and_quarantine() {
        let health = Health::new("t1".into(), 1);
        let trust = Trust::new("t1".into());
        let now = Instant::now();
        assert_eq!(trust.role(&health, now), Role::Trusted);
        health.fail_now("connect", &"test");
        assert_eq!(trust.role(&health, now), Role::Down);
        trust.hint(&key("a"), 10);
        trust.hint(&key("b"), 10);
        trust.hint(&key("a"), 10);
        assert_eq!(
            trust.take_replay(&health),
            None,
            "down: nothing to replay yet"
        );
        health.succeed();
        assert_eq!(
            trust.role(&health, now),
            Role::WriteOnly,
            "up, not yet reconciled"
        );
        let Some(Replay::Keys(mut keys)) = trust.take_replay(&health) else {
            panic!("keys to replay");
        };
        keys.sort();
        assert_eq!(keys, vec![key("a"), key("b")]);
        assert_eq!(trust.take_replay(&health), None, "one replay at a time");
        // A write while the replay runs is hinted again.
        trust.hint(&key("c"), 10);
        let deleted = keys.len();
        let outcome = Replayed::Keys {
            deleted,
            failed: vec![],
        };
        trust.replayed(outcome, &health, Duration::ZERO);
        assert_eq!(
            trust.role(&health, now),
            Role::WriteOnly,
            "c is still to replay"
        );
        let replay = trust.take_replay(&health).expect("c");
        assert_eq!(replay, Replay::Keys(vec![key("c")]));
        let outcome = Replayed::Keys {
            deleted: 1,
            failed: vec![],
        };
        trust.replayed(outcome, &health, Duration::from_secs(60));
        assert_eq!(
            trust.role(&health, Instant::now()),
            Role::WriteOnly,
            "quarantined"
        );
        let later = Instant::now() + Duration::from_secs(61);
        assert!(!trust.warming(later, Duration::from_secs(10)));
        assert_eq!(trust.role(&health, later), Role::Trusted);
        assert!(
            trust.warming(later, Duration::from_secs(10)),
            "just trusted again"
        );
        let much_later = later + Duration::from_secs(11);
        assert!(!trust.warming(much_later, Duration::from_secs(10)));
        let window = Duration::from_secs(10);
        assert!(!trust.steady(&health, later, window), "warming");
        assert!(trust.steady(&health, much_later, window));
        assert!(trust.steady(&health, much_later, window), "the fast path");
        trust.hint(&key("d"), 10);
        assert!(!trust.steady(&health, much_later, window), "a hint ends it");
    }

    #[test]
    fn failed_replays_are_kept_and_overflow_asks_for_a_flush() {
        let health = Health::new("t2".into(), 1);
        let trust = Trust::new("t2".into());
        trust.hint(&key("a"), 2);
        let replay = trust.take_replay(&health).expect("suspect and up");
        assert_eq!(replay, Replay::Keys(vec![key("a")]));
        let failed = Replayed::Keys {
            deleted: 0,
            failed: vec![key("a")],
        };
        trust.replayed(failed, &health, Duration::ZERO);
        assert_eq!(trust.role(&health, Instant::now()), Role::WriteOnly);
        assert_eq!(
            trust.take_replay(&health),
            Some(Replay::Keys(vec![key("a")]))
        );
        let outcome = Replayed::Keys {
            deleted: 1,
            failed: vec![],
        };
        trust.replayed(outcome, &health, Duration::ZERO);
        // Over the bound: the hints go, and only a flush will do.
        for name in ["a", "b", "c", "d"] {
            trust.hint(&key(name), 2);
        }
        let replay = trust.take_replay(&health).expect("overflowed");
        assert_eq!(replay, Replay::Flush);
        trust.replayed(Replayed::Flushed(false), &health, Duration::ZERO);
        assert_eq!(
            trust.take_replay(&health),
            Some(Replay::Flush),
            "the flush failed: again"
        );
        trust.replayed(Replayed::Flushed(true), &health, Duration::ZERO);
        assert_eq!(trust.role(&health, Instant::now()), Role::Trusted);
    }

    #[test]
    fn a_down_and_up_unseen_by_requests_still_makes_the_node_suspect() {
        let health = Health::new("t3".into(), 1);
        let trust = Trust::new("t3".into());
        assert!(trust.steady(&health, Instant::now(), Duration::ZERO));
        health.fail_now("timeout", &"test");
        assert!(!trust.steady(&health, Instant::now(), Duration::ZERO));
        health.succeed();
        // No write was hinted here, but another sidecar's may have been.
        assert_eq!(trust.role(&health, Instant::now()), Role::WriteOnly);
        assert_eq!(trust.take_replay(&health), Some(Replay::Keys(vec![])));
    }
}
