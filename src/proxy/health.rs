//! Whether a node is up, and when it is marked down.
//!
//! One failure is not an outage: a node is marked down only after
//! `failure_limit` consecutive failures (connect, TLS, SASL, timeout), as
//! twemproxy's `server_failure_limit`. Any success resets the count. While a
//! node is down, requests for it do not wait on it at all; the cluster's prober
//! tries one connection per probe interval, and the first that succeeds brings
//! the node back (see docs/ARCHITECTURE.md, "Failure model of the sidecar").
//!
//! Every state change is logged once, with its reason, and exported as the
//! `memgate_proxy_node_up` gauge.

use std::sync::Mutex;
use std::time::Instant;

use crate::metrics as m;

#[derive(Debug)]
enum State {
    /// Serving; `failures` counts consecutive failures since the last success.
    Up { failures: u32 },
    Down {
        since: Instant,
        reason: &'static str,
    },
}

/// One node's health.
#[derive(Debug)]
pub struct Health {
    node: String,
    failure_limit: u32,
    state: Mutex<State>,
    /// How many times it was marked down: a node whose count moved may
    /// have missed writes meanwhile (`proxy::replicas`).
    downs: std::sync::atomic::AtomicU64,
    /// Whether `state` is up, read without its lock on the request path.
    up: std::sync::atomic::AtomicBool,
}

impl Health {
    /// A node that starts up; `failure_limit` consecutive failures mark it
    /// down (0 is taken as 1).
    pub fn new(node: String, failure_limit: u32) -> Health {
        metrics::gauge!(m::PROXY_NODE_UP, "node" => node.clone()).set(1.0);
        Health {
            node,
            failure_limit: failure_limit.max(1),
            state: Mutex::new(State::Up { failures: 0 }),
            downs: std::sync::atomic::AtomicU64::new(0),
            up: std::sync::atomic::AtomicBool::new(true),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Record a failure; returns true if this changed the node to down.
    pub fn fail(&self, reason: &'static str, detail: &dyn std::fmt::Display) -> bool {
        self.record_failure(reason, detail, false)
    }

    /// Record a failure that alone shows the node cannot serve (see
    /// `UpstreamError::is_definitive`): down at once, whatever the count.
    pub fn fail_now(&self, reason: &'static str, detail: &dyn std::fmt::Display) -> bool {
        self.record_failure(reason, detail, true)
    }

    fn record_failure(
        &self,
        reason: &'static str,
        detail: &dyn std::fmt::Display,
        definitive: bool,
    ) -> bool {
        let mut state = self.lock();
        let State::Up { failures } = *state else {
            return false;
        };
        let failures = failures + 1;
        if failures < self.failure_limit && !definitive {
            *state = State::Up { failures };
            drop(state);
            tracing::debug!(node = %self.node, reason, error = %detail, failures, "node failure");
            return false;
        }
        *state = State::Down {
            since: Instant::now(),
            reason,
        };
        self.downs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.up.store(false, std::sync::atomic::Ordering::Release);
        drop(state);
        tracing::warn!(node = %self.node, reason, error = %detail, failures, "node marked down");
        metrics::gauge!(m::PROXY_NODE_UP, "node" => self.node.clone()).set(0.0);
        true
    }

    /// How many times it has been marked down so far.
    pub fn downs(&self) -> u64 {
        self.downs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Record a success; returns true if this brought the node back up.
    pub fn succeed(&self) -> bool {
        let mut state = self.lock();
        match *state {
            State::Up { failures: 0 } => false,
            State::Up { .. } => {
                *state = State::Up { failures: 0 };
                false
            }
            State::Down { since, reason } => {
                *state = State::Up { failures: 0 };
                self.up.store(true, std::sync::atomic::Ordering::Release);
                drop(state);
                tracing::info!(node = %self.node, was = reason, down_for = ?since.elapsed(), "node back up");
                metrics::gauge!(m::PROXY_NODE_UP, "node" => self.node.clone()).set(1.0);
                true
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_only_after_consecutive_failures_and_back_on_success() {
        let h = Health::new("n1".into(), 3);
        assert!(h.is_up());
        assert!(!h.fail("timeout", &"slow"));
        assert!(!h.fail("timeout", &"slow"));
        assert!(h.is_up(), "two failures are under the limit of three");
        assert!(!h.succeed(), "a success while up is no change");
        assert!(!h.fail("timeout", &"slow"));
        assert!(!h.fail("timeout", &"slow"));
        assert!(h.is_up(), "the success reset the count");
        assert!(
            h.fail("connect", &"refused"),
            "the third in a row marks it down"
        );
        assert!(!h.fail("connect", &"refused"), "only the first is a change");
        assert!(!h.is_up());
        assert!(h.succeed());
        assert!(!h.succeed());
        assert!(h.is_up());
    }

    #[test]
    fn a_definitive_failure_marks_down_at_once() {
        let h = Health::new("n1".into(), 5);
        assert!(h.fail_now("auth", &"refused"));
        assert!(!h.is_up());
    }

    #[test]
    fn a_limit_of_one_marks_down_at_the_first_failure() {
        let h = Health::new("n1".into(), 0);
        assert!(h.fail("connect", &"refused"));
        assert!(!h.is_up());
    }
}
