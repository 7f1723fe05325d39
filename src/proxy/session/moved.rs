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
//!
//! With memgate nodes (`Connection::keeps_tombstones`), a hit read
//! from the node a key left is also copied to its new node, with its flags
//! and remaining TTL, as an add that a tombstone refuses
//! (`node::tombstones`): every delete the warm-up makes on a key's new node
//! leaves one, and so does every write there that may have left the key
//! absent (a delete, a failed replace, incr, append or cas). A copy read
//! the item before such a write reached the old node; if it reaches the new
//! node after the write, the tombstone refuses it, and if before, the write
//! (or its tombstone's delete) overrides it. So a copy never brings back a
//! deleted value nor undoes a write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use super::copy::{ask, copy_item, is_miss};
use super::{connection_for, start, Part};
use crate::metrics as m;
use crate::protocol::request::{Command, Frame, Key, StoreMode};
use crate::protocol::Response;
use crate::proxy::pins::Pins;
use crate::proxy::pool::{clear, tombstone_ttl, Cluster, Upstream};
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
    let timeout = cluster.settings.request_timeout;
    // Copies and tombstones need a memgate node as the key's new node.
    let tombstones = match moved.new_is_primary {
        true => primary
            .sent_on()
            .is_some_and(|(_, conn)| conn.keeps_tombstones()),
        false => conn.keeps_tombstones(),
    };
    let later = Later {
        warm: Arc::clone(warm),
        node: Arc::clone(secondary),
        conn,
        timeout,
        // Long enough for any copy already on its way to arrive.
        bury: tombstones.then(|| tombstone_ttl(timeout)),
    };
    let key = command.key().cloned().unwrap_or_default();
    Some(match effect {
        Effect::Read => {
            // Copies go to the new node, once it is primary.
            let copy_to = primary
                .sent_on()
                .filter(|_| tombstones && moved.new_is_primary);
            Box::pin(read(
                primary,
                later,
                command.clone(),
                frame.clone(),
                key,
                copy_to,
            ))
        }
        Effect::Write => {
            // The new node is primary: bury the key there if the write may
            // have left it absent; else the new node is the secondary, and
            // its clear buries it.
            let bury_primary = primary.sent_on().filter(|_| moved.new_is_primary);
            let write = Write {
                key,
                is_delete: matches!(command, Command::Delete(_)),
                add: matches!(command, Command::Store(s) if s.mode == StoreMode::Add),
                bury_primary,
                clear_buries: !moved.new_is_primary,
            };
            Box::pin(write.run(primary, later))
        }
    })
}

/// The secondary, for a request made after the primary's reply.
struct Later {
    warm: Arc<Warmup>,
    node: Arc<Upstream>,
    conn: Connection,
    timeout: std::time::Duration,
    /// The TTL of the tombstones the warm-up leaves, if the nodes keep them.
    bury: Option<i64>,
}

impl Later {
    /// `command` on the secondary; None if the warm-up gave up on it since
    /// this request began (requests pipelined behind the one that found it
    /// failing do not each wait out their timeout on it).
    async fn ask(&self, command: Command, frame: Frame) -> Option<Result<Response, UpstreamError>> {
        if self.warm.is_abandoned(&self.node) {
            return None;
        }
        Some(ask(&self.node, &self.conn, command, frame, self.timeout).await)
    }
}

/// A read: the primary's reply, or on a miss the secondary's. A hit there
/// is copied to `copy_to` (the new node), after the client has its reply.
async fn read(
    primary: Part,
    secondary: Later,
    command: Command,
    frame: Frame,
    key: Key,
    copy_to: Option<(Arc<Upstream>, Connection)>,
) -> Result<Response, UpstreamError> {
    let first = primary.outcome().await?;
    if !is_miss(&first) {
        return Ok(first);
    }
    let Some(second) = secondary.ask(command, frame).await else {
        return Ok(first);
    };
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
        Ok(response) => {
            let allowed = secondary.warm.copies_allowed();
            if let (Some(to), true) = (copy_to, result == "hit" && allowed) {
                tokio::spawn(copy(secondary, to, key));
            }
            Ok(response)
        }
    }
}

/// Copy `key` from the secondary to `to` (`copy::copy_item`), unless the
/// warm-up gave up on the secondary since.
async fn copy(from: Later, to: (Arc<Upstream>, Connection), key: Key) {
    if from.warm.is_abandoned(&from.node) {
        return;
    }
    let counter = m::PROXY_WARMUP_COPIES_TOTAL;
    copy_item(
        (&from.node, &from.conn),
        vec![to],
        key,
        from.timeout,
        counter,
    )
    .await;
}

/// A write to a moved key, and what must follow it.
struct Write {
    key: Key,
    is_delete: bool,
    /// An add: NOT_STORED means the key is there.
    add: bool,
    /// The new node, when it is the primary: buried if the write may have
    /// left the key absent there, so that no copy lands after it.
    bury_primary: Option<(Arc<Upstream>, Connection)>,
    /// The secondary is the new node: its clear leaves a tombstone.
    clear_buries: bool,
}

impl Write {
    /// The primary's reply, once the key is gone from the secondary.
    async fn run(self, primary: Part, secondary: Later) -> Result<Response, UpstreamError> {
        // Whatever the primary said: a write that failed may still have landed.
        let first = primary.outcome().await;
        if let (Some((node, conn)), Some(ttl)) = (&self.bury_primary, secondary.bury) {
            let present = match &first {
                Ok(Response::Stored { .. } | Response::Exists | Response::Number { .. }) => true,
                Ok(Response::Get(_) | Response::Touched) => true,
                Ok(Response::NotStored) => self.add,
                _ => false,
            };
            if !present {
                let bury = clear(self.key.clone(), Some(ttl), None);
                // A failure here is the primary's own: the key may stay
                // absent without a tombstone, so no copy may follow.
                if ask(node, conn, bury, internal_frame(), secondary.timeout)
                    .await
                    .is_err()
                {
                    secondary.warm.stop_copies();
                }
            }
        }
        let tombstone = secondary.bury.filter(|_| self.clear_buries);
        let clear = clear(self.key, tombstone, None);
        // Given up on: never read again, so there is nothing to clear.
        let Some(cleared) = secondary.ask(clear, internal_frame()).await else {
            return first;
        };
        let ok = matches!(cleared, Ok(Response::Deleted | Response::NotFound));
        metrics::counter!(m::PROXY_WARMUP_CLEARS_TOTAL, "result" => if ok { "ok" } else { "error" })
            .increment(1);
        if !ok {
            // It may still hold the old value: never read it again. If it
            // is the new node, it may also lack the tombstone: no copies.
            secondary.warm.abandon(&secondary.node);
            if self.clear_buries {
                secondary.warm.stop_copies();
            }
        }
        match first {
            // The key was on the secondary alone: the client's delete found it.
            Ok(Response::NotFound)
                if self.is_delete && matches!(cleared, Ok(Response::Deleted)) =>
            {
                Ok(Response::Deleted)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::{Delete, Get};

    #[test]
    fn reads_and_writes_are_told_apart() {
        let key = crate::protocol::request::Key::from_static(b"k");
        let get = Command::Get(Get {
            keys: smallvec::smallvec![key.clone()],
            ..Get::default()
        });
        assert!(matches!(effect(&get), Effect::Read));
        let vivify = Command::Get(Get {
            keys: smallvec::smallvec![key.clone()],
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
