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
//! queue until shortly before the earliest one (a futex wait), spins only
//! that last stretch, and then completes the waiter's oneshot: the waiting
//! task runs within microseconds of its instant, and never before it.
//!
//! The spin must stay short. On a core shared with other jobs the scheduler
//! gives each thread its fair share; a pacer that spun for long (150 µs per
//! wake-up was tried) spent its share spinning and was then descheduled
//! mid-spin for whole slices of the other jobs, so at 1,000 ops/s pinned to
//! one loaded core requests left 9–18 ms late (benches/NOTES.md). The
//! thread therefore lowers its own timer slack (the kernel's default lets a
//! futex wait end up to 50 µs late), so that the wait itself ends within a
//! few microseconds of its deadline and [`SPIN`] covers only the wake-up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The pacer blocks until this long before a wake-up, then spins: about a
/// futex wait's lateness with the slack lowered, little enough that the
/// spinning costs a percent of a core at 1,000 wake-ups a second.
const SPIN: Duration = Duration::from_micros(20);

/// Without the lowered slack a wait may end this much late (the default
/// slack is 50 µs), so the spin starts this much earlier.
const SPIN_DEFAULT_SLACK: Duration = Duration::from_micros(70);

/// The timer slack the pacer asks for, in ns: its waits end on time.
const SLACK_NS: &str = "1";

/// A request shorter than this from now is not worth a hand-off.
const NOW: Duration = Duration::from_micros(2);

/// The pacer wakes a waiting task this long before its instant, and the task
/// spins the rest on its worker: about what waking a parked tokio worker
/// takes (measured at load 13 on 2 cores: a p50 of 21–26 µs between the
/// pacer's instant and the send), so that the hand-off is not counted as
/// latency. It holds a worker at most this long per paced request.
const HANDOFF: Duration = Duration::from_micros(30);

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

/// Lower this thread's timer slack through `/proc/<tid>/timerslack_ns`
/// (Linux 4.6+; a thread may set its own without privileges). False when
/// it could not, and the waits keep the default slack.
fn lower_timer_slack() -> bool {
    let Ok(link) = std::fs::read_link("/proc/thread-self") else {
        return false;
    };
    // "<pid>/task/<tid>": /proc/<tid> is the thread's own entry.
    let Some(tid) = link.file_name() else {
        return false;
    };
    let path = std::path::Path::new("/proc")
        .join(tid)
        .join("timerslack_ns");
    std::fs::write(path, SLACK_NS).is_ok()
}

fn run(rx: mpsc::Receiver<Wake>) {
    let spin = if lower_timer_slack() {
        SPIN
    } else {
        SPIN_DEFAULT_SLACK
    };
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
        if left > spin {
            match rx.recv_timeout(left - spin) {
                Ok(wake) => heap.push(Reverse(wake)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            continue;
        }
        let at = next.at;
        while Instant::now() < at {
            // A wake-up that arrives meanwhile may be due first: order it
            // with the rest before going on.
            if let Ok(wake) = rx.try_recv() {
                heap.push(Reverse(wake));
                break;
            }
            std::hint::spin_loop();
        }
    }
}

/// Return at `at`, to within a few microseconds, and never before it.
pub(super) async fn until(at: Instant) {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = Instant::now();
    if at > now + HANDOFF + NOW {
        let (tx, rx) = oneshot::channel();
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wake = Wake {
            at: at - HANDOFF,
            seq,
            tx,
        };
        if pacer().send(wake).is_err() || rx.await.is_err() {
            // No pacer: tokio's timer, then the last stretch by yielding.
            tokio::time::sleep_until((at - Duration::from_millis(2).min(at - now)).into()).await;
            while Instant::now() < at {
                tokio::task::yield_now().await;
            }
        }
    }
    // The last stretch on this worker: the hand-off's slack, or less.
    while Instant::now() < at {
        std::hint::spin_loop();
    }
}
