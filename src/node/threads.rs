//! The session threads: every accepted connection is served, for its whole
//! life, by one of several threads, each running a single-threaded tokio
//! runtime of its own; connections are dealt out in turn. This is
//! memcached's layout (one listener, `-t` worker threads, 4 by default).
//!
//! Why not the work-stealing runtime the rest of the process uses: it wakes
//! one worker for all the sockets that became ready, and keeps the others
//! parked, so on a core it shares with other work, the node is a single
//! busy thread. The kernel hands CPU time out per thread, and a thread that
//! has just used up its share waits out other threads' slices before it
//! runs again; memcached's four threads get four shares. Measured with
//! memcaslap (16 connections, node and memcached pinned to one busy core):
//! the node waited 38 µs in the run queue per request, memcached 7.6 µs,
//! and the node served a quarter of memcached's requests for the same CPU
//! time per request (benches/NOTES.md, 2026-12-01).
//!
//! The count is `--threads` (memcached's `-t`). More threads than cores is
//! what wins that share of a busy core, and it costs CPU: a thread per core
//! switches less and finds more sockets ready per `epoll_wait`
//! (benches/STORE.md measures both).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The session threads; dropping this stops them, and with them every
/// session still running on them.
pub struct SessionThreads {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Each thread runs until its sender is dropped.
    _stop: Vec<oneshot::Sender<()>>,
}

impl SessionThreads {
    /// `count` threads (`NodeSettings::threads`, at least one).
    pub fn start(count: usize) -> io::Result<SessionThreads> {
        let mut handles = Vec::with_capacity(count);
        let mut stop = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let (tx, rx) = oneshot::channel::<()>();
            stop.push(tx);
            std::thread::Builder::new()
                .name(format!("memgate-session-{i}"))
                .spawn(move || {
                    // Returns once the sender is dropped; dropping the
                    // runtime then cancels the sessions left on it.
                    let _ = runtime.block_on(rx);
                })?;
        }
        Ok(SessionThreads {
            handles,
            next: AtomicUsize::new(0),
            _stop: stop,
        })
    }

    /// The runtime of the thread that serves the next connection.
    pub fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }
}
