//! Locking state that every holder leaves consistent.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `mutex`, and take it over if a panic elsewhere poisoned it. Every
/// mutex this is used on guards state that each holder leaves consistent
/// (a few field writes at a time), so one panicking session must not take
/// the others down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
