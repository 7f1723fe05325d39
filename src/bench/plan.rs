//! What each connection sends next, and when: the prefill, the measured
//! mix, and with a rate the intended send times.

use std::time::Instant;

use super::config::{BenchConfig, Stop};
use super::conn::Op;
use super::keys::{self, KeyChooser, Rng};
use super::schedule::Schedule;

/// What one connection does next.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    kind: PlanKind,
    /// Requests handed out.
    pub(super) taken: u64,
    remaining: Option<u64>,
    deadline: Option<Instant>,
    schedule: Option<Schedule>,
}

#[derive(Clone, Debug)]
enum PlanKind {
    /// Set keys `next..end` in order.
    Prefill { next: u64, end: u64 },
    /// The measured mix.
    Mix {
        keys: KeyChooser,
        rng: Rng,
        sets: u64,
        cycle: u64,
        counter: u64,
    },
}

pub(super) enum Wait {
    Now,
    Until(Instant),
    Done,
}

pub(super) struct Item {
    pub(super) op: Op,
    pub(super) key: u64,
    pub(super) intended: Option<Instant>,
}

impl Plan {
    pub(super) fn prefill(key_space: u64, connections: usize, index: usize) -> Plan {
        let n = connections as u64;
        let i = index as u64;
        let share = |i: u64| (u128::from(key_space) * u128::from(i) / u128::from(n)) as u64;
        Plan {
            kind: PlanKind::Prefill {
                next: share(i),
                end: share(i + 1),
            },
            taken: 0,
            remaining: None,
            deadline: None,
            schedule: None,
        }
    }

    pub(super) fn mix(config: &BenchConfig, index: usize, start: Instant) -> Plan {
        let n = config.connections as u64;
        let i = index as u64;
        let (remaining, deadline) = match config.stop {
            Stop::After(d) => (None, Some(start + d)),
            Stop::Requests(total) => (Some(total / n + u64::from(i < total % n)), None),
        };
        Plan {
            kind: PlanKind::Mix {
                keys: KeyChooser::new(config.key_pattern, config.key_space),
                rng: Rng::new(keys::mix(0x0062_656e_6368 ^ i)),
                sets: u64::from(config.ratio.0),
                cycle: u64::from(config.ratio.0) + u64::from(config.ratio.1),
                counter: 0,
            },
            taken: 0,
            remaining,
            deadline,
            schedule: config
                .rate
                .map(|rate| Schedule::for_connection(start, rate, config.connections, index)),
        }
    }

    pub(super) fn wait(&self, now: Instant) -> Wait {
        if self.remaining == Some(0) {
            return Wait::Done;
        }
        if let PlanKind::Prefill { next, end } = self.kind {
            if next >= end {
                return Wait::Done;
            }
        }
        // With a rate the deadline applies to intended times: a request
        // meant to go out before it is sent even if the sender is late, or
        // its latency would be silently omitted.
        if self.schedule.is_none() && self.deadline.is_some_and(|d| now >= d) {
            return Wait::Done;
        }
        match &self.schedule {
            Some(s) => {
                let at = s.next_intended();
                if self.deadline.is_some_and(|d| at >= d) {
                    Wait::Done
                } else if at > now {
                    Wait::Until(at)
                } else {
                    Wait::Now
                }
            }
            None => Wait::Now,
        }
    }

    pub(super) fn finished(&self, now: Instant) -> bool {
        matches!(self.wait(now), Wait::Done)
    }

    /// The next request, if one is due by `now`; never one intended later,
    /// so no request leaves before its time.
    pub(super) fn take(&mut self, now: Instant) -> Option<Item> {
        if !matches!(self.wait(now), Wait::Now) {
            return None;
        }
        let intended = match &mut self.schedule {
            Some(s) => Some(s.take_due(now)?),
            None => None,
        };
        if let Some(r) = &mut self.remaining {
            *r -= 1;
        }
        self.taken += 1;
        let (op, key) = match &mut self.kind {
            PlanKind::Prefill { next, .. } => {
                *next += 1;
                (Op::Set, *next - 1)
            }
            PlanKind::Mix {
                keys,
                rng,
                sets,
                cycle,
                counter,
            } => {
                let op = if *counter % *cycle < *sets {
                    Op::Set
                } else {
                    Op::Get
                };
                *counter += 1;
                (op, keys.next(rng))
            }
        };
        Some(Item { op, key, intended })
    }
}
