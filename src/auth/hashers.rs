//! The threads that check password hashes, at a lower CPU priority than
//! everything else in the process.
//!
//! An argon2id check holds a core for some 15 ms. On tokio's blocking pool
//! it competes with the session threads as an equal, so a request that
//! arrives meanwhile may wait out the whole hash: a flood of first logins or
//! wrong passwords then shows as latency on other tenants' requests. These
//! threads run `SCHED_BATCH` at nice [`NICE`] instead: the kernel runs them
//! when the session threads leave a core idle, and preempts them when a
//! session thread wakes up (at once if the node runs at a real-time
//! priority, as `benches/login.sh` runs it). A node whose cores are all
//! busy still checks hashes, only more slowly.
//!
//! One thread per core at most, as before: each check also holds 19 MiB,
//! and more at once would only share the cores.

use std::sync::mpsc;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::sync::lock;

/// The nice value of the hashing threads (0 is the default, 19 the lowest).
pub const NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of low-priority threads running password checks in order.
#[derive(Debug)]
pub struct Hashers {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Hashers {
    /// `threads` hashing threads (at least one), started now. A thread the
    /// system refuses is logged and done without; with none at all, every
    /// check fails.
    pub fn new(threads: usize) -> Hashers {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = std::sync::Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("memgate-hash-{i}"))
                .spawn(move || {
                    lower_priority();
                    // Ends when the last sender goes.
                    loop {
                        let next = lock(&rx).recv();
                        match next {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "could not start a password hashing thread");
            }
        }
        Hashers {
            jobs: Mutex::new(tx),
        }
    }

    /// Run `check` on a hashing thread; `None` if it could not run (it
    /// panicked, or the threads are gone). `check` is skipped when nobody
    /// waits for its answer any more (the client left while it queued).
    pub async fn run<R, F>(&self, check: F) -> Option<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                return;
            }
            // A panicking check drops `tx` (its waiter sees `None`) and
            // leaves the thread to run the next one.
            if let Ok(answer) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
                let _ = tx.send(answer);
            }
        });
        lock(&self.jobs).send(job).ok()?;
        rx.await.ok()
    }
}

/// Make the calling thread a batch thread at nice [`NICE`]. Lowering one's
/// own priority needs no privilege; if it fails all the same, the thread
/// runs as before, at the process's priority.
#[allow(unsafe_code)]
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread, with a valid pointer to
    // a local for the duration of the call.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        let _ = libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
        let tid = libc::gettid();
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE);
    }
}
