//! The fixed-rate schedule behind `--rate`, which avoids coordinated omission.
//!
//! Request `n` of a connection is *intended* to be sent at
//! `start + n / rate`, computed from `n` each time (never by adding up
//! intervals), so the schedule does not drift. Latency is measured from that
//! intended time. When the sender falls behind (the server stalled, the
//! pipeline window was full, the process was descheduled), every overdue
//! request is sent at once, as soon as it can be, but keeps its original
//! intended time: the stall shows up in the latency of every request it
//! delayed, instead of silently lowering the offered load.
//!
//! The clock is passed in, so this is pure and unit-tested.

use std::time::{Duration, Instant};

/// One connection's share of a fixed offered load.
#[derive(Clone, Debug)]
pub struct Schedule {
    start: Instant,
    /// Nanoseconds between two requests (fractional: rates need not divide 1e9).
    interval_ns: f64,
    /// Requests handed out so far; the next one is number `taken`.
    taken: u64,
}

impl Schedule {
    /// `ops_per_sec` must be positive and finite.
    pub fn new(start: Instant, ops_per_sec: f64) -> Schedule {
        Schedule {
            start,
            interval_ns: 1e9 / ops_per_sec,
            taken: 0,
        }
    }

    /// `connections` connections sharing `total_ops_per_sec`: connection
    /// `index` gets `total / connections`, offset by `index` global intervals
    /// so that the connections interleave instead of firing together.
    pub fn for_connection(
        start: Instant,
        total_ops_per_sec: f64,
        connections: usize,
        index: usize,
    ) -> Schedule {
        let connections = connections.max(1);
        let offset = Duration::from_secs_f64(index as f64 / total_ops_per_sec);
        Schedule::new(start + offset, total_ops_per_sec / connections as f64)
    }

    /// When request `n` is meant to be sent.
    pub fn intended(&self, n: u64) -> Instant {
        // f64 holds nanoseconds exactly up to 2^53 ns (104 days).
        self.start + Duration::from_nanos((n as f64 * self.interval_ns) as u64)
    }

    /// When the next request is meant to be sent.
    pub fn next_intended(&self) -> Instant {
        self.intended(self.taken)
    }

    /// The next request's intended time, if it is due by `now` (and count it
    /// as taken). Call repeatedly to catch up after a stall.
    pub fn take_due(&mut self, now: Instant) -> Option<Instant> {
        let at = self.next_intended();
        if at <= now {
            self.taken += 1;
            Some(at)
        } else {
            None
        }
    }

    /// How many requests are due by `now` and not yet taken.
    pub fn overdue(&self, now: Instant) -> u64 {
        if now < self.start {
            return 0;
        }
        let elapsed = now.duration_since(self.start).as_nanos() as f64;
        let due = (elapsed / self.interval_ns).floor() as u64 + 1;
        // Rounding may put the boundary one either way; trust `intended`.
        let due = if due > 0 && self.intended(due - 1) > now {
            due - 1
        } else if self.intended(due) <= now {
            due + 1
        } else {
            due
        };
        due.saturating_sub(self.taken)
    }

    /// Requests taken so far.
    pub fn taken(&self) -> u64 {
        self.taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn intended_times_follow_the_rate() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 1000.0);
        assert_eq!(s.intended(0), t0);
        assert_eq!(s.intended(1), t0 + ms(1));
        assert_eq!(s.intended(250), t0 + ms(250));
        let s = Schedule::new(t0, 3.0);
        assert_eq!(s.intended(3), t0 + Duration::from_secs(1));
        assert_eq!(s.intended(1), t0 + Duration::from_nanos(333_333_333));
    }

    #[test]
    fn no_drift_over_many_requests() {
        // 7 ops/s does not divide a second; summing rounded intervals would
        // drift by up to 1 ns per request. Computing from n does not.
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 7.0);
        let mut now = t0;
        let mut last = t0;
        // Each request takes one turn to become due and one to be taken.
        for _ in 0..14_000_000 {
            if s.taken() == 7_000_000 {
                break;
            }
            match s.take_due(now) {
                Some(at) => last = at,
                None => now = s.next_intended(),
            }
        }
        assert_eq!(s.taken(), 7_000_000);
        let ideal = Duration::from_secs(999_999) + Duration::from_nanos(857_142_857);
        let got = last.duration_since(t0);
        let error = got.abs_diff(ideal);
        assert!(error <= Duration::from_nanos(1), "drifted by {error:?}");
    }

    #[test]
    fn nothing_is_due_early() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 100.0);
        assert_eq!(s.take_due(t0), Some(t0));
        assert_eq!(s.take_due(t0 + ms(9)), None);
        assert_eq!(s.take_due(t0 + ms(10)), Some(t0 + ms(10)));
        assert_eq!(s.overdue(t0 + ms(10)), 0);
    }

    #[test]
    fn catching_up_after_a_stall_keeps_the_intended_times() {
        // 1000 ops/s; the sender stalls from 10 ms to 110 ms.
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 1000.0);
        for i in 0..10 {
            assert_eq!(s.take_due(t0 + ms(i)), Some(t0 + ms(i)));
        }
        let wake = t0 + ms(110);
        assert_eq!(s.overdue(wake), 101, "requests 10..=110 are due");
        let mut latencies = Vec::new();
        while let Some(at) = s.take_due(wake) {
            // Each is sent now; its latency counts from its intended time.
            latencies.push(wake.duration_since(at));
        }
        assert_eq!(latencies.len(), 101, "every missed request is still sent");
        assert_eq!(
            latencies[0],
            ms(100),
            "the first one waited the whole stall"
        );
        assert_eq!(latencies[100], ms(0));
        assert!(latencies.windows(2).all(|w| w[0] > w[1]));
        // The schedule resumes where it was: no burst is skipped, no extra
        // requests are invented, and the offered load over time is exact.
        assert_eq!(s.take_due(wake), None);
        assert_eq!(s.next_intended(), t0 + ms(111));
        assert_eq!(s.taken(), 111);
    }

    #[test]
    fn connections_interleave_and_sum_to_the_rate() {
        let t0 = Instant::now();
        let mut all: Vec<Instant> = Vec::new();
        for i in 0..4 {
            let s = Schedule::for_connection(t0, 400.0, 4, i);
            all.extend((0..100).map(|n| s.intended(n)));
        }
        all.sort();
        // 400 requests in the first second, one every 2.5 ms.
        assert_eq!(all.len(), 400);
        for (n, at) in all.iter().enumerate() {
            let ideal = t0 + Duration::from_micros(2500 * n as u64);
            assert!(
                at.duration_since(t0).abs_diff(ideal.duration_since(t0)) < Duration::from_micros(2)
            );
        }
    }

    #[test]
    fn overdue_before_start_is_zero() {
        let t0 = Instant::now();
        let s = Schedule::new(t0 + ms(5), 10.0);
        assert_eq!(s.overdue(t0), 0);
        assert_eq!(s.overdue(t0 + ms(5)), 1);
        assert_eq!(s.overdue(t0 + ms(205)), 3);
    }
}
