//! The failed-login throttle: exponential backoff per source address and
//! per username.
//!
//! Each key (an address, or a username) may fail [`FREE_FAILURES`] times;
//! then it is blocked for [`BASE_DELAY`], and every further failure blocks
//! it for twice as long as the one before, up to [`MAX_DELAY`]. While a key
//! is blocked its login attempts are refused at once, without looking at
//! the password, so a flood of wrong passwords costs no hashing. A success
//! resets the address and the username it used; a key with no failure for
//! [`FORGET_AFTER`] starts afresh.
//!
//! An attempt is admitted before its password is checked ([`Admission`]),
//! and asked again just before a hash ([`Admission::still_admitted`]), so
//! attempts that queued for a hasher while others failed are refused then,
//! unhashed. After a block, one attempt at a time is checked: the others are
//! refused until it is decided. So a flood from many connections at once
//! costs its free failures and then one check per expired block, not one
//! per connection: each may be an argon2 hash of some 15 ms.
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::keyed_digest;
use crate::sync::lock;

/// Failures a key may have before it is blocked.
pub const FREE_FAILURES: u32 = 3;
/// The block after the last free failure; each further failure doubles it.
pub const BASE_DELAY: Duration = Duration::from_secs(2);
/// The longest block.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A key with no failure for this long starts afresh.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Keys kept per table (addresses; usernames).
pub const MAX_ENTRIES: usize = 16_384;

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
    /// How much longer the block lasts: an attempt before then is refused
    /// too.
    pub remaining: Duration,
}

/// One key's failures.
#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    /// Admitted attempts not decided yet.
    pending: u32,
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

    /// How much longer `key` is blocked at `now`, if it is.
    fn blocked(&self, key: &K, now: Instant) -> Option<Duration> {
        let entry = self.entries.get(key)?;
        entry
            .blocked_until
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
    }

    /// How long `key` must wait before it may be checked again; `None`
    /// when it may be checked now. Once its free failures are spent, one
    /// check at a time: the others wait for its outcome, which may be the
    /// next block.
    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let blocked = self.blocked(key, now);
        let entry = self.entries.get(key)?;
        let spent = entry.failures >= FREE_FAILURES && !forgotten(entry, now);
        blocked.or((spent && entry.pending > 0).then_some(BASE_DELAY))
    }

    /// The entry for `key`, made (room made first) if it has none.
    fn entry(&mut self, key: K, now: Instant) -> &mut Entry {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.evict(now);
        }
        self.entries.entry(key).or_insert(Entry {
            failures: 0,
            pending: 0,
            blocked_until: now,
            last_failure: now,
        })
    }

    fn admit(&mut self, key: K, now: Instant) {
        let entry = self.entry(key, now);
        entry.pending = entry.pending.saturating_add(1);
    }

    /// An admitted attempt ended undecided (its check was abandoned).
    fn release(&mut self, key: &K) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.pending = entry.pending.saturating_sub(1);
        }
    }

    fn fail(&mut self, key: K, now: Instant) {
        let entry = self.entry(key, now);
        entry.pending = entry.pending.saturating_sub(1);
        if forgotten(entry, now) {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        if entry.failures >= FREE_FAILURES {
            entry.blocked_until = now + block_for(entry.failures + 1 - FREE_FAILURES);
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
            .retain(|_, e| e.pending > 0 || !forgotten(e, now));
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

/// Whether `entry`'s failures are old enough to start afresh.
fn forgotten(entry: &Entry, now: Instant) -> bool {
    now.saturating_duration_since(entry.last_failure) >= FORGET_AFTER
}

/// The block after the `nth` failure from the last free one on (1: the
/// last free one's).
fn block_for(nth: u32) -> Duration {
    let factor = 1u32.checked_shl(nth.saturating_sub(1)).unwrap_or(u32::MAX);
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

/// An attempt the throttle let through: it counts against its address and
/// usernames until it is decided with [`Admission::failed`] or
/// [`Admission::succeeded`]; dropped undecided, it no longer counts.
#[derive(Debug)]
pub struct Admission {
    throttle: Arc<Throttle>,
    address: IpAddr,
    usernames: Vec<[u8; 32]>,
    decided: bool,
}

impl Admission {
    /// Whether the attempt may still be checked at `now`: other attempts
    /// may have failed, and blocked its keys, since it was admitted.
    pub fn still_admitted(&self, now: Instant) -> Result<(), Throttled> {
        if let Some(remaining) = lock(&self.throttle.addresses).blocked(&self.address, now) {
            return Err(Throttled {
                reason: Reason::Address,
                remaining,
            });
        }
        let table = lock(&self.throttle.usernames);
        match self
            .usernames
            .iter()
            .filter_map(|d| table.blocked(d, now))
            .max()
        {
            Some(remaining) => Err(Throttled {
                reason: Reason::Username,
                remaining,
            }),
            None => Ok(()),
        }
    }

    /// The attempt's password was checked and was wrong, at `now`.
    pub fn failed(mut self, now: Instant) {
        self.decided = true;
        lock(&self.throttle.addresses).fail(self.address, now);
        let mut table = lock(&self.throttle.usernames);
        for username in &self.usernames {
            table.fail(*username, now);
        }
    }

    /// The attempt logged in as `username`: its address and that username
    /// start afresh; its other usernames (the ASCII login's other reading)
    /// were not guesses.
    pub fn succeeded(mut self, username: &[u8]) {
        self.decided = true;
        lock(&self.throttle.addresses).succeed(&self.address);
        let mut table = lock(&self.throttle.usernames);
        let digest = keyed_digest(username);
        for other in &self.usernames {
            if *other == digest {
                table.succeed(other);
            } else {
                table.release(other);
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.decided {
            return;
        }
        lock(&self.throttle.addresses).release(&self.address);
        let mut table = lock(&self.throttle.usernames);
        for username in &self.usernames {
            table.release(username);
        }
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

    /// Let an attempt from `peer` as any of `usernames` be checked at
    /// `now`, or refuse it. A refusal changes nothing: it was not a guess.
    pub fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
        usernames: &[&[u8]],
        now: Instant,
    ) -> Result<Admission, Throttled> {
        let address = address_key(peer);
        let mut addresses = lock(&self.addresses);
        if let Some(remaining) = addresses.wait(&address, now) {
            return Err(Throttled {
                reason: Reason::Address,
                remaining,
            });
        }
        let digests: Vec<[u8; 32]> = usernames.iter().map(|u| keyed_digest(u)).collect();
        let mut table = lock(&self.usernames);
        if let Some(remaining) = digests.iter().filter_map(|d| table.wait(d, now)).max() {
            return Err(Throttled {
                reason: Reason::Username,
                remaining,
            });
        }
        addresses.admit(address, now);
        for digest in &digests {
            table.admit(*digest, now);
        }
        Ok(Admission {
            throttle: Arc::clone(self),
            address,
            usernames: digests,
            decided: false,
        })
    }

    /// How long `peer`'s address must wait at `now` before its next login
    /// may be checked, if it must: its connections need not be read until
    /// then, every login on them would be refused.
    pub fn address_blocked(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        lock(&self.addresses).wait(&address_key(peer), now)
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
