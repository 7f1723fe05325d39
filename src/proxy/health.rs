//! Whether a node is up, and when a down node may be tried again.
//!
//! A node that fails (connect, TLS, SASL, timeout) is down for the retry delay.
//! Every state change is logged once, with its reason, and exported as the
//! `memgate_proxy_node_up` gauge.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics as m;

#[derive(Debug)]
enum State {
    Up,
    Down {
        since: Instant,
        retry_at: Instant,
        reason: &'static str,
    },
}

/// One node's health.
#[derive(Debug)]
pub struct Health {
    node: String,
    retry_delay: Duration,
    state: Mutex<State>,
}

impl Health {
    pub fn new(node: String, retry_delay: Duration) -> Health {
        metrics::gauge!(m::PROXY_NODE_UP, "node" => node.clone()).set(1.0);
        Health {
            node,
            retry_delay,
            state: Mutex::new(State::Up),
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(*self.lock(), State::Up)
    }

    /// True when requests may use the node: it is up, or its retry time has come.
    pub fn may_try(&self, now: Instant) -> bool {
        match *self.lock() {
            State::Up => true,
            State::Down { retry_at, .. } => now >= retry_at,
        }
    }

    /// Record a failure; returns true if this changed the node to down.
    pub fn fail(&self, reason: &'static str, detail: &dyn std::fmt::Display) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        let was_up = matches!(*state, State::Up);
        let since = match *state {
            State::Down { since, .. } => since,
            State::Up => now,
        };
        *state = State::Down {
            since,
            retry_at: now + self.retry_delay,
            reason,
        };
        drop(state);
        if was_up {
            tracing::warn!(node = %self.node, reason, error = %detail, retry_in = ?self.retry_delay, "node marked down");
            metrics::gauge!(m::PROXY_NODE_UP, "node" => self.node.clone()).set(0.0);
        }
        was_up
    }

    /// Record a success; returns true if this brought the node back up.
    pub fn succeed(&self) -> bool {
        let mut state = self.lock();
        if let State::Down { since, reason, .. } = *state {
            *state = State::Up;
            drop(state);
            tracing::info!(node = %self.node, was = reason, down_for = ?since.elapsed(), "node back up");
            metrics::gauge!(m::PROXY_NODE_UP, "node" => self.node.clone()).set(1.0);
            return true;
        }
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_until_retry_delay_then_back_on_success() {
        let h = Health::new("n1".into(), Duration::from_millis(50));
        assert!(h.is_up());
        assert!(h.fail("connect", &"refused"));
        assert!(
            !h.fail("connect", &"refused"),
            "only the first failure is a change"
        );
        assert!(!h.is_up());
        assert!(!h.may_try(Instant::now()));
        assert!(h.may_try(Instant::now() + Duration::from_millis(60)));
        assert!(h.succeed());
        assert!(!h.succeed());
        assert!(h.is_up());
    }
}
