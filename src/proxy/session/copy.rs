//! What the warm-up (`moved`) and the replicas (`replica`) share: one
//! request on a given connection, whether a reply is a miss, and the copy
//! of an item from one node to others.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::Sleep;

use super::send;
use crate::protocol::request::{Command, Frame, Get, Key, MetaFrame, Store, StoreMode};
use crate::protocol::{Found, Response};
use crate::proxy::pool::Upstream;
use crate::proxy::upstream::{internal_frame, Connection, UpstreamError};

/// `command` on `conn` of `node` now, and its reply.
pub(super) async fn ask(
    node: &Arc<Upstream>,
    conn: &Connection,
    command: Command,
    frame: Frame,
    timeout: Duration,
) -> Result<Response, UpstreamError> {
    let timer = std::pin::pin!(tokio::time::sleep(timeout));
    ask_timed(node, conn, command, frame, timeout, timer).await
}

/// `ask`, timed by `timer` (`Part::outcome_timed`).
pub(super) async fn ask_timed(
    node: &Arc<Upstream>,
    conn: &Connection,
    command: Command,
    frame: Frame,
    timeout: Duration,
    timer: Pin<&mut Sleep>,
) -> Result<Response, UpstreamError> {
    send(node, conn.clone(), command, &frame, Instant::now(), timeout)
        .outcome_timed(timer)
        .await
}

/// Whether `response` says the key is not there.
pub(super) fn is_miss(response: &Response) -> bool {
    match response {
        Response::Get(items) => items.iter().all(Option::is_none),
        Response::NotFound | Response::MetaDebug(None) => true,
        _ => false,
    }
}

/// Copy `key` from `from` to every node of `to`: its value, flags,
/// remaining TTL and CAS, as an add that a tombstone refuses, counted in
/// `counter` by result (copied, refused, error). Only between memgate
/// nodes: memcached has no tombstones, and a copy could land after a
/// delete.
pub(super) async fn copy_item(
    from: (&Arc<Upstream>, &Connection),
    to: Vec<(Arc<Upstream>, Connection)>,
    key: Key,
    timeout: Duration,
    counter: &'static str,
) {
    if !from.1.keeps_tombstones() {
        return;
    }
    let whole = Frame::Meta(Box::new(MetaFrame {
        return_value: true,
        return_flags: true,
        return_ttl: true,
        return_cas: true,
        ..MetaFrame::default()
    }));
    let read = Command::Get(Get {
        keys: smallvec::smallvec![key],
        ..Get::default()
    });
    let Ok(Response::Get(mut found)) = ask(from.0, from.1, read, whole, timeout).await else {
        return;
    };
    let Some(Found {
        key,
        flags,
        data,
        ttl,
        cas,
        ..
    }) = found.pop().flatten()
    else {
        return;
    };
    // -1: no expiry. 0 would read as none too: an item expiring this very
    // second is not worth copying.
    let exptime = match ttl {
        -1 => 0,
        ttl if ttl > 0 => ttl,
        _ => return,
    };
    for (node, conn) in to.into_iter().filter(|(_, c)| c.keeps_tombstones()) {
        let store = Store {
            mode: StoreMode::Add,
            key: key.clone(),
            flags,
            exptime,
            data: data.clone(),
            cas: None,
            invalidate: false,
            vivify: None,
        };
        // With the item's CAS: a key's CAS stays the same on every node.
        let copy = Command::Copy {
            store,
            version: Some(cas),
        };
        let result = match ask(&node, &conn, copy, internal_frame(), timeout).await {
            Ok(Response::Stored { .. }) => "copied",
            Ok(Response::NotStored | Response::Exists) => "refused",
            _ => "error",
        };
        metrics::counter!(counter, "result" => result).increment(1);
    }
}
