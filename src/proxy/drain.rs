//! Telling every client session to drain: stop reading, answer what is in
//! flight, close.
//!
//! Each session polls its own [`Signal`] on every pass of its loop, so a poll
//! must cost next to nothing: an atomic load, and an uncontended lock only
//! to check that the stored waker is still the task's. A `watch` receiver per
//! session did the same job, but each poll of its `changed()` future walks
//! tokio's waiter list under that channel's lock, shared by every session:
//! about 550 instructions per proxied request (benches/NOTES.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use crate::sync::lock;

/// The signals of every session, raised together.
#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    sessions: Mutex<Vec<Weak<Signal>>>,
}

/// One session's signal.
#[derive(Default)]
pub struct Signal {
    raised: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Drain {
    /// The signal of one more session; already raised if draining began.
    pub fn signal(&self) -> Arc<Signal> {
        let signal = Arc::new(Signal::default());
        let mut sessions = lock(&self.sessions);
        if self.draining.load(Ordering::SeqCst) {
            signal.raised.store(true, Ordering::SeqCst);
        }
        // Forget the sessions that have ended before growing: the list then
        // holds at most about twice the sessions alive.
        if sessions.len() == sessions.capacity() {
            sessions.retain(|s| s.strong_count() > 0);
        }
        sessions.push(Arc::downgrade(&signal));
        signal
    }

    /// Raise every session's signal, and those of sessions yet to come.
    pub fn start(&self) {
        let mut sessions = lock(&self.sessions);
        self.draining.store(true, Ordering::SeqCst);
        for signal in sessions.drain(..).filter_map(|s| s.upgrade()) {
            signal.raise();
        }
    }
}

impl Signal {
    fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        if let Some(waker) = lock(&self.waker).take() {
            waker.wake();
        }
    }

    /// Ready once raised; until then the task is woken when it is.
    pub fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.raised.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        {
            let mut waker = lock(&self.waker);
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        // Raised between the first look and the waker's registration: that
        // raise may have found no waker to wake.
        if self.raised.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiting_session_wakes_when_draining_starts() {
        let drain = Arc::new(Drain::default());
        let signal = drain.signal();
        let waiter = tokio::spawn(async move { std::future::poll_fn(|cx| signal.poll(cx)).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drain.start();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("no panic");
    }

    #[test]
    fn a_session_after_the_start_is_raised_at_once() {
        let drain = Drain::default();
        drain.start();
        let signal = drain.signal();
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(signal.poll(&mut cx), Poll::Ready(()));
    }

    #[test]
    fn ended_sessions_are_forgotten() {
        let drain = Drain::default();
        let alive: Vec<_> = (0..3).map(|_| drain.signal()).collect();
        for _ in 0..1000 {
            drop(drain.signal());
        }
        let held = lock(&drain.sessions).len();
        assert!(held <= 2 * 16, "{held} weak handles for 3 live sessions");
        drain.start();
        let mut cx = Context::from_waker(Waker::noop());
        for signal in &alive {
            assert_eq!(signal.poll(&mut cx), Poll::Ready(()));
        }
    }
}
