//! The failed-login throttle: exponential backoff per source address and
//! per username.
//!
//! Each key (an address, or a username) may fail [`FREE_FAILURES`] times;
//! every further failure blocks it for twice as long as the one before,
//! from [`BASE_DELAY`] up to [`MAX_DELAY`]. While a key is blocked its login
//! attempts are refused at once, without looking at the password, so a
//! flood of wrong passwords costs no hashing. A success resets the address
//! and the username it used; a key with no failure for [`FORGET_AFTER`]
//! starts afresh.
//!
//! Both tables are bounded ([`MAX_ENTRIES`] keys each), so an attacker
//! cycling usernames or addresses cannot grow them: when one is full, keys
//! already forgotten go first, then the oldest eighth. IPv6 addresses are
//! keyed by their /64, the block one host usually holds. Usernames are
//! keyed by their keyed digest, so the table keeps no username.
//!
//! The throttle is deliberately absolute: while a username is blocked even
//! its right password is refused, because any check of a password, cached
//! or not, would let a guesser go on guessing. An attack on one username
//! can therefore lock that credential out for up to [`MAX_DELAY`] at a
//! time; other credentials, and other addresses, are not affected.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::keyed_digest;
use crate::sync::lock;

/// Failures a key may have before it is blocked.
pub const FREE_FAILURES: u32 = 5;
/// The block after the first failure beyond [`FREE_FAILURES`]; each further
/// failure doubles it.
pub const BASE_DELAY: Duration = Duration::from_secs(1);
/// The longest block.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A key with no failure for this long starts afresh.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Keys kept per table (addresses; usernames).
pub const MAX_ENTRIES: usize = 16_384;
/// Longest a refused attempt's answer is held back (see [`Throttled::hold`]).
pub const MAX_HOLD: Duration = Duration::from_secs(1);

/// What a refused attempt was blocked by: the label of the throttle metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its source address is blocked.
    Address,
    /// Its username is blocked.
    Username,
}

impl Reason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Address => "address",
            Reason::Username => "username",
        }
    }
}

/// An attempt refused by the throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// What is blocked.
    pub reason: Reason,
    /// How much longer the block lasts.
    pub remaining: Duration,
}

impl Throttled {
    /// How long to hold the refusal back before answering it: a guesser
    /// that waits for its answers (as one must, to learn anything) then
    /// gets at most one refusal per [`MAX_HOLD`] per connection, and a
    /// flood costs the node next to nothing. Short, so a held connection
    /// does not sit on its slot for long.
    pub fn hold(&self) -> Duration {
        self.remaining.min(MAX_HOLD)
    }
}

/// One key's failures.
#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    blocked_until: Instant,
    last_failure: Instant,
}

/// A bounded map of keys to their failures.
#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Entry>,
    capacity: usize,
}

impl<K: Hash + Eq> Table<K> {
    fn new(capacity: usize) -> Self {
        Table {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    fn blocked(&self, key: &K, now: Instant) -> Option<Duration> {
        let entry = self.entries.get(key)?;
        entry
            .blocked_until
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
    }

    fn fail(&mut self, key: K, now: Instant) {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.evict(now);
        }
        let entry = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            blocked_until: now,
            last_failure: now,
        });
        if now.saturating_duration_since(entry.last_failure) >= FORGET_AFTER {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        if entry.failures > FREE_FAILURES {
            entry.blocked_until = now + block_for(entry.failures - FREE_FAILURES);
        }
    }

    fn succeed(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Make room: drop forgotten keys, and if that is not enough, the
    /// eighth with the oldest failures. Removing an eighth at a time means
    /// a key-cycling attacker pays for this sweep once per `capacity / 8`
    /// new keys, not on every one.
    fn evict(&mut self, now: Instant) {
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last_failure) < FORGET_AFTER);
        if self.entries.len() < self.capacity {
            return;
        }
        let mut ages: Vec<Instant> = self.entries.values().map(|e| e.last_failure).collect();
        let nth = (self.capacity / 8).max(1) - 1;
        let (_, cutoff, _) = ages.select_nth_unstable(nth);
        let cutoff = *cutoff;
        self.entries.retain(|_, e| e.last_failure > cutoff);
    }
}

/// The block after the `over`-th failure beyond the free ones.
fn block_for(over: u32) -> Duration {
    let factor = 1u32.checked_shl(over.saturating_sub(1)).unwrap_or(u32::MAX);
    BASE_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

/// The address key: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64.
fn address_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !(u128::from(u64::MAX));
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The failed-login throttle of a node; kept across reloads.
#[derive(Debug)]
pub struct Throttle {
    addresses: Mutex<Table<IpAddr>>,
    usernames: Mutex<Table<[u8; 32]>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(MAX_ENTRIES)
    }
}

impl Throttle {
    /// A throttle keeping at most `capacity` keys per table.
    pub fn new(capacity: usize) -> Self {
        Throttle {
            addresses: Mutex::new(Table::new(capacity)),
            usernames: Mutex::new(Table::new(capacity)),
        }
    }

    /// Whether an attempt from `peer` as any of `usernames` may be checked
    /// at `now`. A refusal changes nothing: it was not a guess.
    pub fn check(&self, peer: IpAddr, usernames: &[&[u8]], now: Instant) -> Result<(), Throttled> {
        let blocked = lock(&self.addresses).blocked(&address_key(peer), now);
        if let Some(remaining) = blocked {
            return Err(Throttled {
                reason: Reason::Address,
                remaining,
            });
        }
        let table = lock(&self.usernames);
        let remaining = usernames
            .iter()
            .filter_map(|u| table.blocked(&keyed_digest(u), now))
            .max();
        match remaining {
            Some(remaining) => Err(Throttled {
                reason: Reason::Username,
                remaining,
            }),
            None => Ok(()),
        }
    }

    /// A checked attempt from `peer` as `usernames` failed at `now`.
    pub fn failed(&self, peer: IpAddr, usernames: &[&[u8]], now: Instant) {
        lock(&self.addresses).fail(address_key(peer), now);
        let mut table = lock(&self.usernames);
        for username in usernames {
            table.fail(keyed_digest(username), now);
        }
    }

    /// `peer` logged in as `username`: both start afresh.
    pub fn succeeded(&self, peer: IpAddr, username: &[u8]) {
        lock(&self.addresses).succeed(&address_key(peer));
        lock(&self.usernames).succeed(&keyed_digest(username));
    }

    /// Keys held now (addresses, usernames).
    #[cfg(test)]
    pub(crate) fn keys_held(&self) -> (usize, usize) {
        (
            lock(&self.addresses).entries.len(),
            lock(&self.usernames).entries.len(),
        )
    }
}
