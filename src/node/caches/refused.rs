//! Login attempts already refused, so that the same wrong password is not
//! hashed again.
//!
//! The common login flood is not a guesser but an app deployed with an old
//! password, reconnecting in a loop: the same username and password over
//! and over. Before any right password has filled the credential's
//! verified-secret slot (`auth::Verified`), each of its attempts that the
//! throttle lets through would be an argon2 hash of milliseconds. Here each
//! refused (username, password) pair is kept as a keyed MAC under the
//! per-process key, so a repeat is refused in a microsecond. A guesser
//! trying new passwords gains nothing: each new one is still hashed, as
//! often as the throttle allows.
//!
//! It holds no plaintext and no unkeyed digest; it is bounded
//! ([`CAPACITY`] entries, oldest dropped first); and it lives in the login
//! directory, which every reload and admin change rebuilds, so a credential
//! added or changed is never refused from an older memory.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use crate::auth::keyed_digest;
use crate::sync::lock;

/// Refused pairs remembered, across all credentials.
pub const CAPACITY: usize = 4096;

/// The set of refused (username, password) tags.
#[derive(Default)]
pub struct Refused {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl std::fmt::Debug for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Refused({} kept)", lock(&self.inner).order.len())
    }
}

/// The tag of one attempt: the username's length first, so that no two
/// (username, password) pairs share an input.
fn tag(username: &[u8], password: &[u8]) -> [u8; 32] {
    let mut input = Vec::with_capacity(24 + username.len() + password.len());
    input.extend_from_slice(b"memgate refused login\0");
    input.extend_from_slice(&(username.len() as u64).to_le_bytes());
    input.extend_from_slice(username);
    input.extend_from_slice(password);
    keyed_digest(&input)
}

impl Refused {
    /// Whether this very attempt was refused before.
    pub fn contains(&self, username: &[u8], password: &[u8]) -> bool {
        let tag = tag(username, password);
        lock(&self.inner).set.contains(&tag)
    }

    /// Remember that this attempt was refused.
    pub fn insert(&self, username: &[u8], password: &[u8]) {
        let tag = tag(username, password);
        let mut inner = lock(&self.inner);
        if !inner.set.insert(tag) {
            return;
        }
        inner.order.push_back(tag);
        if inner.order.len() > CAPACITY {
            if let Some(oldest) = inner.order.pop_front() {
                inner.set.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_each_pair_apart_and_forgets_the_oldest() {
        let refused = Refused::default();
        refused.insert(b"u", b"pw");
        assert!(refused.contains(b"u", b"pw"));
        assert!(!refused.contains(b"u", b"pw2"));
        assert!(!refused.contains(b"up", b"w"), "length-prefixed");
        assert!(!refused.contains(b"v", b"pw"));
        for i in 0..CAPACITY {
            refused.insert(b"u", format!("other{i}").as_bytes());
        }
        assert!(!refused.contains(b"u", b"pw"), "the oldest went first");
        assert!(refused.contains(b"u", format!("other{}", CAPACITY - 1).as_bytes()));
        assert_eq!(lock(&refused.inner).set.len(), CAPACITY);
        assert!(!format!("{refused:?}").contains("pw"));
    }
}
