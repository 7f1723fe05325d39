//! The counts and the latency histogram each connection keeps.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::sync::OwnedSemaphorePermit;

use super::conn::{BenchReply, Op};
use super::{BenchError, Ctx, Live};

/// Latency is recorded in microseconds, up to 100 s, to 3 significant digits.
const HISTOGRAM_MAX_US: u64 = 100_000_000;

fn new_histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3)
        .map_err(|e| BenchError::Internal(format!("histogram: {e}")))
}

/// A request written and not yet answered. Holding it holds a window slot.
pub(super) struct InFlight {
    pub(super) op: Op,
    pub(super) key: u64,
    pub(super) opaque: u32,
    /// Latency counts from here: the intended time with a rate, else the write.
    pub(super) start: Instant,
    /// When it was actually written; the timeout counts from here.
    pub(super) sent: Instant,
    pub(super) _slot: OwnedSemaphorePermit,
}

/// One connection's (or the run's) counts.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Requests handed to a connection; each ends up in exactly one of
    /// hits, misses, sets or errors, so this equals [`Stats::ops`].
    pub sent: u64,
    pub hits: u64,
    pub misses: u64,
    pub sets: u64,
    /// Every request that did not succeed; includes the three below and,
    /// with churn, the attempts in `connect_failures`.
    pub errors: u64,
    pub timeouts: u64,
    pub verify_failures: u64,
    /// Requests lost with a connection that broke.
    pub lost: u64,
    pub reconnects: u64,
    /// Connects, TLS handshakes or logins that failed: reconnects of a
    /// broken connection or, with churn, attempts (each also an error).
    pub connect_failures: u64,
    pub latency: Histogram<u64>,
    /// With a rate: how late each request left behind its intended time,
    /// in µs (the load generator's own lateness, which its latency includes).
    pub send_lag: Histogram<u64>,
}

impl Stats {
    pub(super) fn new() -> Result<Stats, BenchError> {
        Ok(Stats {
            sent: 0,
            hits: 0,
            misses: 0,
            sets: 0,
            errors: 0,
            timeouts: 0,
            verify_failures: 0,
            lost: 0,
            reconnects: 0,
            connect_failures: 0,
            latency: new_histogram()?,
            send_lag: new_histogram()?,
        })
    }

    pub fn ops(&self) -> u64 {
        self.hits + self.misses + self.sets + self.errors
    }

    pub(super) fn merge(&mut self, other: &Stats) {
        self.sent += other.sent;
        self.hits += other.hits;
        self.misses += other.misses;
        self.sets += other.sets;
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.verify_failures += other.verify_failures;
        self.lost += other.lost;
        self.reconnects += other.reconnects;
        self.connect_failures += other.connect_failures;
        // Same bounds on both sides, so this cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.send_lag.add(&other.send_lag);
    }

    /// A paced request left `lag` after its intended time.
    pub(super) fn sent_late(&mut self, lag: Duration) {
        self.send_lag.saturating_record(micros(lag));
    }

    /// Count `reply` to a request for `key` that took `latency`.
    pub(super) fn reply(
        &mut self,
        ctx: &Ctx,
        live: &Live,
        key: u64,
        latency: Duration,
        reply: BenchReply,
    ) {
        let us = micros(latency);
        self.latency.saturating_record(us);
        let expected = ctx.config.verify.then(|| ctx.values.get(key));
        match judge(&reply, expected.as_ref()) {
            Outcome::Hit => self.hits += 1,
            Outcome::Miss => self.misses += 1,
            Outcome::Stored => self.sets += 1,
            Outcome::WrongValue => {
                self.verify_failures += 1;
                self.error(live);
            }
            Outcome::ErrorReply => self.error(live),
        }
        live.ops.fetch_add(1, Ordering::Relaxed);
        live.latency_us.fetch_add(us, Ordering::Relaxed);
    }

    fn error(&mut self, live: &Live) {
        self.errors += 1;
        live.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A churn attempt whose connect, TLS handshake or login failed.
    pub(super) fn connect_failed(&mut self, live: &Live) {
        self.connect_failures += 1;
        self.error(live);
        live.ops.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn failed(&mut self, live: &Live, timeout: bool) {
        if timeout {
            self.timeouts += 1;
        } else {
            self.lost += 1;
        }
        self.error(live);
        live.ops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whole microseconds, at least 1 (the histograms' lowest value).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// What a reply counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Hit,
    Miss,
    Stored,
    /// A hit whose value is not the key's (only when verifying).
    WrongValue,
    ErrorReply,
}

/// Judge `reply`; `expected` is the key's value when hits are verified.
pub(super) fn judge(reply: &BenchReply, expected: Option<&Bytes>) -> Outcome {
    match reply {
        BenchReply::Hit(data) if expected.is_some_and(|want| data != want) => Outcome::WrongValue,
        BenchReply::Hit(_) => Outcome::Hit,
        BenchReply::Miss => Outcome::Miss,
        BenchReply::Stored => Outcome::Stored,
        BenchReply::Error(_) => Outcome::ErrorReply,
    }
}
