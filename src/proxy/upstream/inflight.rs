//! The requests written on one connection and waiting for their replies.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

use super::UpstreamError;
use crate::protocol::meta::client::Expect;
use crate::protocol::request::Store;
use crate::protocol::{Command, Response};

/// Where a request's reply goes. It also counts the request in its
/// connection's load until it is answered or dropped, whichever path (reply,
/// failure, aborted task) gets there.
pub(super) struct ReplySlot {
    pub tx: Option<oneshot::Sender<Replied>>,
    pub load: Arc<AtomicUsize>,
}

impl ReplySlot {
    pub fn send(mut self, result: Replied) {
        if let Some(tx) = self.tx.take() {
            // The caller may have given up (timeout, client gone): nothing to do.
            let _ = tx.send(result);
        }
    }
}

impl Drop for ReplySlot {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a request has no reply. A request lost with its connection (or
/// never written) gives its command back: a replicated read that fails on
/// one replica is tried on the next with it, where keeping a copy of every
/// read for that rare case cost a tenth of a proxied read
/// (`proxy::session::replica::Again`). A request whose reply came but was
/// refused has none: its command went into decoding the reply.
#[derive(Debug)]
pub struct NoReply {
    pub error: UpstreamError,
    /// Boxed: a failure is rare, and a command is large.
    pub command: Option<Box<Command>>,
}

impl NoReply {
    /// A failure that hands the request's command back.
    pub(super) fn returning(error: UpstreamError, command: Command) -> NoReply {
        NoReply {
            error,
            command: Some(Box::new(command)),
        }
    }
}

/// A request's reply, or why it has none.
pub type Replied = Result<Response, NoReply>;

/// A reply to come; a dropped sender means the connection was lost.
pub type PendingReply = oneshot::Receiver<Replied>;

/// A request written and waiting for its reply.
pub(super) struct InFlight {
    pub opaque: u32,
    /// The shape of its meta reply (binary replies carry their own).
    pub expect: Expect,
    pub command: Command,
    pub reply: ReplySlot,
    /// Replies so far (STAT answers with many packets): key and value as
    /// sent, since a `cachedump` packet's key is an item's key.
    pub stats: Vec<(Vec<u8>, String)>,
    /// Set for a large request: the writer waits on it.
    pub done: Option<Arc<Notify>>,
}

/// What stays in flight of a command its caller keeps
/// (`Connection::send_kept`): all that decoding its reply takes. A store's
/// reply depends on its mode and CAS, never on its key or value, which are
/// left out; any other command is kept whole.
pub(super) fn reply_shape(command: &Command) -> Command {
    match command {
        Command::Store(store) => Command::Store(Store {
            mode: store.mode,
            key: Bytes::new(),
            flags: store.flags,
            exptime: store.exptime,
            data: Bytes::new(),
            cas: store.cas,
            invalidate: store.invalidate,
            vivify: store.vivify,
        }),
        other => other.clone(),
    }
}

/// Fail every request in flight with `error`, waking a writer held behind one.
pub(super) fn fail_all(inflight: &Mutex<VecDeque<InFlight>>, error: UpstreamError) {
    if let Ok(mut q) = inflight.lock() {
        for req in q.drain(..) {
            if let Some(done) = &req.done {
                done.notify_one();
            }
            let failed = NoReply::returning(error.clone(), req.command);
            req.reply.send(Err(failed));
        }
    }
}
