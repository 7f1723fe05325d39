//! Wake-ups at exact instants for `memgate bench --rate`, without spinning a
//! tokio worker.
//!
//! tokio's timer fires on millisecond ticks, up to a tick late, so a writer
//! that slept on it until a request's intended time would send it up to
//! ~1 ms late, and with a rate that lateness would count as server latency.
//! Spinning in the writer instead holds a runtime worker busy the whole time
//! (at 1,000 ops/s, all of it), taking a core from the reader tasks and, on a
//! small machine, from the server under test.
//!
//! So one OS thread keeps every pending wake-up in a heap. It blocks on its
//! queue until shortly before the earliest one (a futex wait, accurate to
//! tens of microseconds), spins only that last stretch, and then completes
//! the waiter's oneshot: the waiting task runs within microseconds of its
//! instant, and never before it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The pacer blocks until this long before a wake-up, then spins: more than
/// a futex wait's usual lateness (timer slack is 50 µs), little enough that
/// the spinning costs a small share of a core.
const SPIN: Duration = Duration::from_micros(150);

/// A request shorter than this from now is not worth a hand-off.
const NOW: Duration = Duration::from_micros(2);

struct Wake {
    at: Instant,
    seq: u64,
    tx: oneshot::Sender<()>,
}

impl PartialEq for Wake {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Wake {}
impl PartialOrd for Wake {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Wake {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

fn pacer() -> &'static mpsc::Sender<Wake> {
    static PACER: OnceLock<mpsc::Sender<Wake>> = OnceLock::new();
    PACER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Wake>();
        let spawned = std::thread::Builder::new()
            .name("memgate-bench-pacer".into())
            .spawn(move || run(rx));
        if let Err(error) = spawned {
            // Without the thread every wait falls back to tokio's timer.
            tracing::warn!(%error, "bench pacer thread did not start");
        }
        tx
    })
}

fn run(rx: mpsc::Receiver<Wake>) {
    let mut heap: BinaryHeap<Reverse<Wake>> = BinaryHeap::new();
    loop {
        let Some(Reverse(next)) = heap.peek() else {
            match rx.recv() {
                Ok(wake) => heap.push(Reverse(wake)),
                Err(_) => return,
            }
            continue;
        };
        let now = Instant::now();
        if next.at <= now {
            if let Some(Reverse(due)) = heap.pop() {
                // The waiter may have gone (its run ended): nothing to do.
                let _ = due.tx.send(());
            }
            continue;
        }
        let left = next.at - now;
        if left > SPIN {
            match rx.recv_timeout(left - SPIN) {
                Ok(wake) => heap.push(Reverse(wake)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            continue;
        }
        let at = next.at;
        while Instant::now() < at {
            std::hint::spin_loop();
        }
        // Take whatever arrived meanwhile before waking, so that it is
        // ordered with the rest.
        while let Ok(wake) = rx.try_recv() {
            heap.push(Reverse(wake));
        }
    }
}

/// Return at `at`, to within a few microseconds, and never before it.
pub(super) async fn until(at: Instant) {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = Instant::now();
    if at <= now + NOW {
        while Instant::now() < at {
            std::hint::spin_loop();
        }
        return;
    }
    let (tx, rx) = oneshot::channel();
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let queued = pacer().send(Wake { at, seq, tx }).is_ok();
    if !queued || rx.await.is_err() {
        // No pacer: tokio's timer, then the last stretch by yielding.
        tokio::time::sleep_until((at - Duration::from_millis(2).min(at - now)).into()).await;
        while Instant::now() < at {
            tokio::task::yield_now().await;
        }
    }
}
