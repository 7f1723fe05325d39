//! Requests for keys that moved in the last reload, while its warm-up runs
//! (`proxy::warmup` says which node is primary and why).
//!
//! A read goes to the primary; a miss there is read again from the
//! secondary. A write goes to the primary, and once it has answered, the
//! key is deleted on the secondary; the client hears the primary's reply
//! only then. Both nodes' requests go on this client's pinned connections
//! (`proxy::pins`), so they stay in order with the client's other requests
//! to those nodes: a `get` after this client's `delete` of a moved key
//! cannot read the secondary before the delete has cleared it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use super::{connection_for, send, start, Part};
use crate::metrics as m;
use crate::protocol::request::{Command, Delete, Frame};
use crate::protocol::Response;
use crate::proxy::pins::Pins;
use crate::proxy::pool::{Cluster, Upstream};
use crate::proxy::upstream::{internal_frame, Connection, UpstreamError};
use crate::proxy::warmup::{Moved, Warmup};

/// The reply to come for a moved key's request.
pub(super) type Outcome = Pin<Box<dyn Future<Output = Result<Response, UpstreamError>> + Send>>;

/// What a request does to its key, for the warm-up.
enum Effect {
    /// Reads it (a miss may be read again elsewhere).
    Read,
    /// Changes or removes it.
    Write,
}

fn effect(command: &Command) -> Effect {
    match command {
        // Meta vivify creates an item on a miss.
        Command::Get(get) if get.vivify.is_none() => Effect::Read,
        Command::Touch { .. } | Command::MetaDebug { .. } => Effect::Read,
        _ => Effect::Write,
    }
}

/// Whether `response` says the key is not there.
fn is_miss(response: &Response) -> bool {
    match response {
        Response::Get(items) => items.iter().all(Option::is_none),
        Response::NotFound | Response::MetaDebug(None) => true,
        _ => false,
    }
}

/// Start `command` on both of its key's nodes, as `moved` says; None if the
/// warm-up asks nothing more of it than its primary (then `start` it there).
pub(super) async fn start_moved(
    cluster: &Cluster,
    warm: &Arc<Warmup>,
    moved: Moved<'_>,
    command: &Command,
    frame: &Frame,
    pins: &mut Pins,
    now: &mut Instant,
) -> Option<Outcome> {
    let secondary = moved.secondary?;
    let effect = effect(command);
    if matches!(effect, Effect::Read) && !moved.fallback {
        return None;
    }
    let primary = start(
        cluster,
        moved.primary,
        command.clone(),
        frame.clone(),
        pins,
        now,
    )
    .await;
    // The secondary's connection is taken (and pinned) now, in this
    // request's place among the client's requests, though used later.
    let Ok(conn) = connection_for(cluster, secondary, pins, now).await else {
        warm.abandon(secondary);
        return Some(Box::pin(primary.outcome()));
    };
    let later = Later {
        warm: Arc::clone(warm),
        node: Arc::clone(secondary),
        conn,
        timeout: cluster.settings.request_timeout,
    };
    Some(match effect {
        Effect::Read => Box::pin(read(primary, later, command.clone(), frame.clone())),
        Effect::Write => {
            let key = command.key().cloned().unwrap_or_default();
            Box::pin(write(
                primary,
                later,
                key,
                matches!(command, Command::Delete(_)),
            ))
        }
    })
}

/// The secondary, for a request made after the primary's reply.
struct Later {
    warm: Arc<Warmup>,
    node: Arc<Upstream>,
    conn: Connection,
    timeout: std::time::Duration,
}

impl Later {
    async fn ask(&self, command: Command, frame: Frame) -> Result<Response, UpstreamError> {
        send(
            &self.node,
            self.conn.clone(),
            command,
            frame,
            Instant::now(),
            self.timeout,
        )
        .outcome()
        .await
    }
}

/// A read: the primary's reply, or on a miss the secondary's.
async fn read(
    primary: Part,
    secondary: Later,
    command: Command,
    frame: Frame,
) -> Result<Response, UpstreamError> {
    let first = primary.outcome().await?;
    if !is_miss(&first) {
        return Ok(first);
    }
    let second = secondary.ask(command, frame).await;
    let result = match &second {
        Ok(response) if is_miss(response) => "miss",
        Ok(Response::Error(_)) | Err(_) => "error",
        Ok(_) => "hit",
    };
    metrics::counter!(m::PROXY_WARMUP_FALLBACKS_TOTAL, "result" => result).increment(1);
    match second {
        // Not read again: the next read of its keys misses instead.
        Err(error) => {
            secondary.warm.abandon(&secondary.node);
            Err(error)
        }
        Ok(Response::Error(_)) => Ok(first),
        Ok(response) => Ok(response),
    }
}

/// A write: the primary's reply, once the key is gone from the secondary.
async fn write(
    primary: Part,
    secondary: Later,
    key: crate::protocol::request::Key,
    is_delete: bool,
) -> Result<Response, UpstreamError> {
    // Whatever the primary said: a write that failed may still have landed.
    let first = primary.outcome().await;
    let clear = Command::Delete(Delete {
        key,
        cas: None,
        invalidate: false,
        exptime: None,
    });
    let cleared = secondary.ask(clear, internal_frame()).await;
    let ok = matches!(cleared, Ok(Response::Deleted | Response::NotFound));
    metrics::counter!(m::PROXY_WARMUP_CLEARS_TOTAL, "result" => if ok { "ok" } else { "error" })
        .increment(1);
    if !ok {
        // It may still hold the old value: never read it again.
        secondary.warm.abandon(&secondary.node);
    }
    match first {
        // The key was on the secondary alone: the client's delete found it.
        Ok(Response::NotFound) if is_delete && matches!(cleared, Ok(Response::Deleted)) => {
            Ok(Response::Deleted)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::Get;

    #[test]
    fn reads_and_writes_are_told_apart() {
        let key = crate::protocol::request::Key::from_static(b"k");
        let get = Command::Get(Get {
            keys: vec![key.clone()],
            ..Get::default()
        });
        assert!(matches!(effect(&get), Effect::Read));
        let vivify = Command::Get(Get {
            keys: vec![key.clone()],
            vivify: Some(30),
            ..Get::default()
        });
        assert!(matches!(effect(&vivify), Effect::Write), "vivify creates");
        let delete = Command::Delete(Delete {
            key,
            cas: None,
            invalidate: false,
            exptime: None,
        });
        assert!(matches!(effect(&delete), Effect::Write));
        assert!(is_miss(&Response::Get(vec![None])));
        assert!(is_miss(&Response::NotFound));
        assert!(!is_miss(&Response::Deleted));
    }
}
