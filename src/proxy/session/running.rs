//! A client's requests that take upstream round trips one after another: a
//! replicated write, then what its other replicas are given; a warm-up's
//! fallback read, then its copy. Each is polled as soon as a reply of its
//! comes in, wherever it stands in the client's queue: polled only at the
//! front, as the queue's other replies are, it would start its second round
//! trip only once every reply before it had been written, one request at a
//! time where the first ones went out together.
//!
//! One set of futures per session, which polls only those woken
//! (`FuturesUnordered`), rather than a task each: a task costs an aligned
//! allocation and a trip through the scheduler, several times what these
//! requests cost the session otherwise.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};

use std::collections::VecDeque;

use super::moved::Outcome;
use super::{Head, Pending};
use crate::protocol::Response;
use crate::proxy::upstream::UpstreamError;

/// The requests running for one client.
#[derive(Default)]
pub(super) struct Running {
    set: FuturesUnordered<Tagged>,
    next: u64,
}

/// A running request, with the number the client's queue knows it by.
struct Tagged {
    id: u64,
    outcome: Outcome,
}

impl Future for Tagged {
    type Output = (u64, Result<Response, UpstreamError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let id = self.id;
        self.outcome.as_mut().poll(cx).map(|result| (id, result))
    }
}

impl Running {
    /// Run `outcome`, the request of `head`: its place in the client's
    /// queue, which `finished` fills in with its result.
    pub(super) fn start(&mut self, head: Head, outcome: Outcome) -> Pending {
        let id = self.next;
        self.next += 1;
        self.set.push(Tagged { id, outcome });
        Pending::Running {
            head,
            id,
            result: None,
        }
    }

    /// Put the result of the request numbered `id` in its place in `queue`.
    pub(super) fn finished(
        queue: &mut VecDeque<Pending>,
        id: u64,
        outcome: Result<Response, UpstreamError>,
    ) {
        let place = queue.iter_mut().find_map(|pending| match pending {
            Pending::Running {
                id: waiting,
                result,
                ..
            } if *waiting == id => Some(result),
            _ => None,
        });
        if let Some(place) = place {
            *place = Some(outcome);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The next request to finish, with its number; `None` when none runs.
    pub(super) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(u64, Result<Response, UpstreamError>)>> {
        self.set.poll_next_unpin(cx)
    }
}

impl Drop for Running {
    /// A client that left (or a session that ended) does not cut its
    /// requests short: a replicated write is still given to every replica,
    /// or the replicas would differ with nothing to reconcile them.
    fn drop(&mut self) {
        if self.set.is_empty() {
            return;
        }
        let mut set = std::mem::take(&mut self.set);
        // No runtime: the process is ending, and the nodes with it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { while set.next().await.is_some() {} });
        }
    }
}
