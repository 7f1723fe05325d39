//! How much the sidecar holds for one client: its replies not yet written,
//! and its requests read but not yet answered.
//!
//! A client that sends faster than it reads (or stops reading) must not make
//! the sidecar buffer without bound, and must not crowd other clients'
//! requests out of the shared upstream connections: every reply it has in
//! flight is queued there ahead of theirs. So each session stops taking new
//! requests, and stops reading, once what it holds reaches the limit
//! (`--client-buffer`), and carries on as replies are written, as memcached
//! stops reading a client whose replies it cannot write. Nothing is dropped.
//!
//! What a reply will weigh is not known until it arrives, so each upstream
//! part is charged at the largest reply part this client has had so far,
//! and never less than [`PART_FLOOR`]: a client of small values pipelines
//! up to `limit / PART_FLOOR` parts, and one of large values learns its
//! weight from its first reply. A request is taken only if its charge fits
//! beside what is held, so a multi-key get of large values waits for the one
//! before it to be written rather than doubling what is held; and it is
//! always taken when nothing else is held, so that any request can be
//! served, however large.

use std::collections::VecDeque;

/// The least a reply part is charged before its size is known.
pub const PART_FLOOR: usize = 64 * 1024;

/// One client's account.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    /// The sum of `charges`.
    held: usize,
    /// What one reply part of this client is charged.
    per_part: usize,
    /// Each queued request's charge and upstream parts, in request order.
    charges: VecDeque<(usize, usize)>,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget {
            limit,
            held: 0,
            per_part: PART_FLOOR,
            charges: VecDeque::new(),
        }
    }

    /// Whether another request may be taken while `unwritten` bytes of
    /// replies wait to be written.
    pub fn has_room(&self, unwritten: usize) -> bool {
        self.charges.is_empty() && unwritten == 0 || self.held + unwritten < self.limit
    }

    /// Whether a request of `bytes` of its own and `parts` upstream replies
    /// may be taken now, while `unwritten` bytes of replies wait to be
    /// written: its charge fits beside what is held, or nothing is held.
    pub fn fits(&self, bytes: usize, parts: usize, unwritten: usize) -> bool {
        self.charges.is_empty() && unwritten == 0
            || self
                .held
                .saturating_add(unwritten)
                .saturating_add(self.charge(bytes, parts))
                <= self.limit
    }

    /// Account a request taken: `bytes` of its own (a value to store) and
    /// `parts` upstream requests whose replies are to come.
    pub fn take(&mut self, bytes: usize, parts: usize) {
        let charge = self.charge(bytes, parts);
        self.held = self.held.saturating_add(charge);
        self.charges.push_back((charge, parts));
    }

    fn charge(&self, bytes: usize, parts: usize) -> usize {
        bytes.saturating_add(parts.saturating_mul(self.per_part))
    }

    /// The oldest request was answered with `encoded` bytes of reply.
    pub fn answered(&mut self, encoded: usize) {
        let Some((charge, parts)) = self.charges.pop_front() else {
            return;
        };
        self.held -= charge;
        if let Some(per_part) = encoded.checked_div(parts) {
            self.per_part = self.per_part.max(per_part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_of_large_values_learns_its_weight() {
        let mut budget = Budget::new(4 << 20);
        // Small parts: up to limit / floor of them.
        for _ in 0..63 {
            assert!(budget.has_room(0));
            budget.take(0, 1);
        }
        assert!(budget.has_room(0));
        budget.take(0, 1);
        assert!(!budget.has_room(0));
        for _ in 0..64 {
            budget.answered(100);
        }
        // A 512 KiB reply teaches the client's weight: 8 parts fill 4 MiB.
        budget.take(0, 1);
        budget.answered(512 << 10);
        for _ in 0..8 {
            assert!(budget.has_room(0));
            budget.take(0, 1);
        }
        assert!(!budget.has_room(0));
    }

    #[test]
    fn a_request_waits_until_its_charge_fits() {
        let mut budget = Budget::new(4 << 20);
        // 50 keys at the floor: 3.2 MiB, taken while nothing is held.
        assert!(budget.fits(0, 50, 0));
        budget.take(0, 50);
        // There is room for small requests, but not for a second such get:
        // taking it would hold twice the limit's worth of large replies.
        assert!(budget.has_room(0));
        assert!(budget.fits(0, 1, 0));
        assert!(!budget.fits(0, 50, 0));
        // Answered but not yet written, its reply still counts.
        budget.answered(25 << 20);
        assert!(!budget.fits(0, 1, 25 << 20));
        // Written: nothing held, and anything may be taken.
        assert!(budget.fits(0, 50, 0));
        assert!(budget.fits(64 << 20, 1, 0));
    }

    #[test]
    fn unwritten_replies_count_and_an_idle_client_may_always_send() {
        let mut budget = Budget::new(1 << 20);
        assert!(!budget.has_room(1 << 20));
        // Nothing held: one request of any size is taken.
        assert!(budget.has_room(0));
        budget.take(50 << 20, 50);
        assert!(!budget.has_room(0));
        budget.answered(50 << 20);
        assert!(budget.has_room(0));
    }
}
