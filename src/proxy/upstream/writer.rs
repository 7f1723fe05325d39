//! The writer task: drives the outbox when a session cannot finish a write.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use tokio::sync::Notify;

use super::error::lost_error;
use super::inflight::{fail_all, InFlight};
use super::outbox::{Driven, Outbox};

/// Take over the outbox whenever a session hands it on (a write that could
/// not finish at once, or a large request to hold behind), and drive it with
/// this task's waker until it is empty.
pub(super) async fn writer(
    outbox: Arc<Mutex<Outbox>>,
    inflight: Arc<Mutex<VecDeque<InFlight>>>,
    work: Arc<Notify>,
    alive: Arc<AtomicBool>,
    failed: Arc<Notify>,
) {
    'outer: loop {
        tokio::select! {
            biased;
            _ = failed.notified() => break,
            _ = work.notified() => {}
        }
        // Let the other clients' sessions run once before writing, so that
        // requests arriving together leave in one TLS write: fewer syscalls
        // and wake-ups on both ends, for the cost of one scheduler pass.
        tokio::task::yield_now().await;
        loop {
            let driven = std::future::poll_fn(|cx| {
                let Ok(mut out) = outbox.lock() else {
                    return Poll::Ready(Err(std::io::Error::other("outbox poisoned")));
                };
                let driven = out.drive(cx);
                if let Poll::Ready(Ok(Driven::Empty)) = driven {
                    out.busy = false;
                }
                driven
            })
            .await;
            match driven {
                Ok(Driven::Empty) => break,
                Ok(Driven::Hold) => {
                    let held = outbox.lock().ok().and_then(|out| out.held.clone());
                    if let Some(held) = held {
                        tokio::select! {
                            _ = held.notified() => {}
                            _ = failed.notified() => break 'outer,
                        }
                    }
                    if let Ok(mut out) = outbox.lock() {
                        out.held = None;
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "upstream write failed");
                    break 'outer;
                }
            }
        }
    }
    alive.store(false, Ordering::Relaxed);
    fail_all(&inflight, lost_error());
    let _ = std::future::poll_fn(|cx| match outbox.lock() {
        Ok(mut out) => out.poll_shutdown(cx),
        Err(_) => Poll::Ready(Ok(())),
    })
    .await;
}
