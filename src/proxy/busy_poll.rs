//! Busy polling after replies (`--busy-poll`): for a short window after the
//! sidecar writes a reply, its event loop keeps polling its sockets instead
//! of sleeping in `epoll_wait`.
//!
//! Why: on a virtual machine a vCPU with nothing to run halts, and the
//! next request then waits for the hypervisor to resume it. On the machine
//! of `benches/RESULTS.md` that is about 24 µs, a fifth of a one-connection
//! round trip, and it is paid on every request of a client that sends its
//! next request soon after the last reply (a page making sequential cache
//! calls). Polling through the window keeps the vCPU running, so the next
//! request is seen as soon as it arrives. HAProxy's `busy-polling` does the
//! same; it is off by default there, as here, because the polling is CPU
//! spent while there is nothing to do: up to the window's length after
//! every reply, up to a whole core when replies are about a window apart.
//! See docs/ARCHITECTURE.md, "Busy polling".
//!
//! How: one task on the proxy's single-threaded runtime. While the window
//! is open it yields in a loop. Each yield hands the CPU to any other
//! thread that wants it on this core (`sched_yield`, so that a process
//! sharing the core, the app or a node, is not held up by the polling) and
//! then to tokio, which polls the sockets with a zero timeout when only
//! yielded tasks are left and runs whatever became ready. When the window
//! closes the task sleeps until the next reply.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::metrics as m;

/// The shared state between the sessions, which say when they replied,
/// and the polling task.
pub struct BusyPoll {
    /// The window's length in nanoseconds, the unit of `last_reply`.
    window: u64,
    epoch: Instant,
    /// When the last reply was written, in nanoseconds since `epoch`.
    last_reply: AtomicU64,
    /// The polling task has found the window closed and waits for `wake`.
    asleep: AtomicBool,
    wake: Notify,
}

impl BusyPoll {
    pub fn new(window: Duration) -> BusyPoll {
        BusyPoll {
            window: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            epoch: Instant::now(),
            last_reply: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A session wrote a reply at `at`: keep polling for a window from then.
    pub fn replied(&self, at: Instant) {
        // SeqCst on both sides (this store, then the load of `asleep`; the
        // task's store of `asleep`, then its load of `last_reply`): at least
        // one of the two sees the other's write, so a reply never finds the
        // task about to sleep without either waking it or being seen by it.
        self.last_reply.store(self.nanos(at), Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst) && self.asleep.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Is the window after the last reply still open at `now`?
    fn open(&self, now: Instant) -> bool {
        self.nanos(now)
            < self
                .last_reply
                .load(Ordering::SeqCst)
                .saturating_add(self.window)
    }

    /// The polling task: runs beside the sessions for as long as the proxy.
    pub async fn run(self: std::sync::Arc<Self>) {
        let polled = metrics::counter!(m::PROXY_BUSY_POLL_MICROSECONDS_TOTAL);
        loop {
            let started = Instant::now();
            let mut now = started;
            while self.open(now) {
                std::thread::yield_now();
                tokio::task::yield_now().await;
                now = Instant::now();
            }
            polled.increment(now.saturating_duration_since(started).as_micros() as u64);
            self.asleep.store(true, Ordering::SeqCst);
            if self.open(Instant::now()) {
                // A reply came between the last check and the store: poll
                // on. Were it also to wake us, the permit it leaves only
                // makes one later sleep end at once.
                self.asleep.store(false, Ordering::SeqCst);
                continue;
            }
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_opens_at_each_reply_and_closes_after_its_length() {
        let poll = BusyPoll::new(Duration::from_millis(10));
        let start = poll.epoch + Duration::from_secs(1);
        assert!(!poll.open(start), "no reply yet");
        poll.replied(start);
        assert!(poll.open(start + Duration::from_millis(9)));
        assert!(!poll.open(start + Duration::from_millis(10)));
        poll.replied(start + Duration::from_millis(20));
        assert!(poll.open(start + Duration::from_millis(29)));
        assert!(!poll.open(start + Duration::from_millis(30)));
    }

    /// Has a wake-up been left for the task (a `notify_one` permit)?
    async fn woken(poll: &BusyPoll) -> bool {
        tokio::select! {
            biased;
            () = poll.wake.notified() => true,
            () = std::future::ready(()) => false,
        }
    }

    #[tokio::test]
    async fn a_reply_wakes_the_task_only_when_it_sleeps() {
        let poll = BusyPoll::new(Duration::from_millis(1));
        poll.replied(Instant::now());
        assert!(!poll.asleep.load(Ordering::SeqCst));
        assert!(!woken(&poll).await, "a reply woke a task that polls");
        poll.asleep.store(true, Ordering::SeqCst);
        poll.replied(Instant::now());
        assert!(
            !poll.asleep.load(Ordering::SeqCst),
            "the reply took the wake-up"
        );
        assert!(woken(&poll).await, "the sleeping task was not woken");
        poll.replied(Instant::now());
        assert!(!woken(&poll).await, "one sleep, one wake-up");
    }
}
