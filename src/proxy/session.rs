//! One client of the sidecar: parse its requests in its own dialect, route each
//! to a node, and write the replies back in order.
//!
//! Requests are forwarded as soon as they are parsed, so a pipelining client
//! has many requests in flight at once, spread over the nodes; the replies are
//! queued in request order and each is written when it (and everything before
//! it) has arrived. A multi-key get is split per key, sent concurrently, and
//! merged in the client's order.
//!
//! The client never logs in: SASL and MemCachier's ASCII login are accepted
//! whatever they carry, because the sidecar logs in to the nodes itself.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::pool::{Cluster, Failover, Node};
use super::upstream::{internal_frame, PendingReply, UpstreamError};
use super::ProxyShared;
use crate::metrics as m;
use crate::protocol::input::{self, Input, Next, FLUSH_THRESHOLD};
use crate::protocol::request::{Command, CommandKind, Frame, Get, StoreMode};
use crate::protocol::{self, ErrorReply, Found, Request, Response};
use crate::session::{self, SessionError};

/// Replies a client may have outstanding before we stop reading from it.
const MAX_PENDING: usize = 1024;

/// A reply to come, resolved in order.
type Pending = Pin<Box<dyn Future<Output = Reply> + Send>>;

struct Reply {
    frame: Frame,
    /// The request's key, for meta replies that echo it.
    key: Option<bytes::Bytes>,
    response: Response,
    command: CommandKind,
    started: Instant,
    close: bool,
}

/// Serve one client until it quits or disconnects.
pub async fn serve<S>(
    stream: S,
    shared: Arc<ProxyShared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let limits = protocol::Limits {
        max_item_size: shared.max_item_size,
    };
    // Which upstream connection slot this client uses while it has requests
    // in flight; chosen afresh (by load) whenever it has none.
    let mut slot: Option<usize> = None;
    let mut input = Input::default();
    let mut wbuf = BytesMut::new();
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut first_command = true;
    let mut closing = false;
    let mut draining = false;
    // One shutdown future for the whole session, rather than a new one (and a
    // new waiter registration) on every pass of the loop.
    let stop = super::stopped(&mut shutdown);
    tokio::pin!(stop);

    loop {
        // Start every request already buffered, while there is room in the
        // queue (also after the queue drained with input still buffered).
        while queue.len() < MAX_PENDING && !closing {
            match input.next(&limits)? {
                None => break,
                Some(Next::Request(request)) => {
                    if queue.is_empty() {
                        slot = None;
                    }
                    let pending = dispatch(&shared, request, first_command, &mut slot).await;
                    first_command = false;
                    queue.push_back(pending);
                }
                Some(Next::Reject {
                    frame,
                    error,
                    unlink,
                }) => {
                    // Like memcached, a refused over-size set removes the old value.
                    if let Some(key) = unlink {
                        let delete = Command::Delete(protocol::request::Delete {
                            key,
                            cas: None,
                            invalidate: false,
                            exptime: None,
                        });
                        let cluster = shared.cluster();
                        let _ = start_routed(&cluster, delete, internal_frame(), &mut slot)
                            .await
                            .resolve(shared.timeout)
                            .await;
                    }
                    let error = Response::Error(error);
                    let reply = ready(frame, None, error, CommandKind::Other, Instant::now());
                    queue.push_back(reply);
                }
            }
        }
        // Encode every reply that is already complete, in order.
        while let Some(front) = queue.front_mut() {
            match std::future::poll_fn(|cx| Poll::Ready(front.as_mut().poll(cx))).await {
                Poll::Ready(reply) => {
                    queue.pop_front();
                    closing |= finish(reply, &mut wbuf);
                    if closing {
                        break;
                    }
                }
                Poll::Pending => break,
            }
        }
        if !wbuf.is_empty() && (queue.is_empty() || wbuf.len() >= FLUSH_THRESHOLD || closing) {
            wr.write_all(&wbuf).await?;
            wr.flush().await?;
            m::RequestMetrics::get()
                .written_bytes
                .increment(wbuf.len() as u64);
            input::written(&mut wbuf);
        }
        if closing || (draining && queue.is_empty()) {
            return Ok(());
        }

        let can_read = queue.len() < MAX_PENDING && !draining;
        let front = async {
            match queue.front_mut() {
                Some(front) => Some(front.await),
                None => std::future::pending().await,
            }
        };
        let read = tokio::select! {
            biased;
            Some(reply) = front => {
                queue.pop_front();
                closing |= finish(reply, &mut wbuf);
                continue;
            }
            // On shutdown: read nothing more, answer what is in flight, close.
            _ = &mut stop, if !draining => {
                draining = true;
                continue;
            }
            read = rd.read_buf(input.read_buf()), if can_read => read?,
            else => return Ok(()),
        };
        if read == 0 {
            // The client half-closed (or left): answer what it already sent,
            // as memcached does, then close. Writes to a gone client fail and
            // end the session anyway.
            draining = true;
            continue;
        }
        m::RequestMetrics::get().read_bytes.increment(read as u64);
    }
}

/// Encode a finished reply and count it; true if the client asked to close.
fn finish(reply: Reply, out: &mut BytesMut) -> bool {
    // Indexes into metrics::RESULT_LABELS.
    let result = match &reply.response {
        Response::Error(ErrorReply::Server(_)) => 3,
        Response::Error(_) => 2,
        Response::Get(items) if items.iter().all(Option::is_none) => 1,
        Response::NotFound => 1,
        _ => 0,
    };
    m::RequestMetrics::get().record(reply.command, result, reply.started.elapsed().as_secs_f64());
    protocol::encode(&reply.frame, reply.key.as_deref(), &reply.response, out);
    reply.close
}

/// A reply known at once (one the session answers itself).
fn ready(
    frame: Frame,
    key: Option<bytes::Bytes>,
    response: Response,
    command: CommandKind,
    started: Instant,
) -> Pending {
    Box::pin(async move {
        Reply {
            frame,
            key,
            response,
            command,
            started,
            close: false,
        }
    })
}

/// Route one request and start it; the returned future yields its reply.
async fn dispatch(
    shared: &Arc<ProxyShared>,
    request: Request,
    first_command: bool,
    slot: &mut Option<usize>,
) -> Pending {
    let key = request.echoed_key();
    let Request { command, frame } = request;
    let kind = command.kind();
    let started = Instant::now();
    if let Some(response) = session::local_answer(&command, crate::node::VERSION) {
        return ready(frame, key, response, kind, started);
    }
    let response = match command {
        // The sidecar logs in for the client: any login is accepted.
        Command::SaslAuth { .. } | Command::SaslStep { .. } => Response::AuthOk,
        Command::Store(ref store)
            if first_command
                && matches!(frame, Frame::Text(_))
                && store.mode == StoreMode::Set
                && shared.is_ascii_login(&store.key, &store.data) =>
        {
            Response::Stored { cas: 0 }
        }
        Command::Quit => {
            let response = session::quit_reply(&frame);
            return Box::pin(async move {
                Reply {
                    frame,
                    key,
                    response,
                    command: kind,
                    started,
                    close: true,
                }
            });
        }
        Command::FlushAll { .. } | Command::Stats { .. } => {
            let cluster = shared.cluster();
            let mut parts = Vec::with_capacity(cluster.nodes.len());
            for node in &cluster.nodes {
                parts.push(start(&cluster, node, command.clone(), frame.clone(), slot).await);
            }
            let timeout = shared.timeout;
            return Box::pin(async move {
                let mut results = Vec::with_capacity(parts.len());
                for part in parts {
                    results.push(part.resolve(timeout).await);
                }
                let response = match command {
                    Command::Stats { .. } => merge_stats(results),
                    _ => merge_all_ok(results),
                };
                Reply {
                    frame,
                    key,
                    response,
                    command: kind,
                    started,
                    close: false,
                }
            });
        }
        Command::Get(get) if get.keys.len() > 1 => {
            let cluster = shared.cluster();
            let Get {
                keys,
                touch,
                vivify,
                recache_below,
                no_bump,
            } = get;
            let mut parts = Vec::with_capacity(keys.len());
            // One upstream request per key, each built from its own key alone:
            // the work is linear in the number of keys.
            for one_key in keys {
                let one = Command::Get(Get {
                    keys: vec![one_key],
                    touch,
                    vivify,
                    recache_below,
                    no_bump,
                });
                parts.push(start_routed(&cluster, one, frame.clone(), slot).await);
            }
            let timeout = shared.timeout;
            return Box::pin(async move {
                let mut items: Vec<Option<Found>> = Vec::with_capacity(parts.len());
                let mut failure = None;
                for part in parts {
                    match part.outcome(timeout).await {
                        Ok(Response::Get(mut found)) => items.push(found.pop().flatten()),
                        Ok(other) => {
                            failure.get_or_insert(other);
                            items.push(None);
                        }
                        // A command the upstream cannot say fails as a whole.
                        Err(UpstreamError::Unsupported(what)) => {
                            failure.get_or_insert(unsupported(what));
                            items.push(None);
                        }
                        // A cache may always miss: an unreachable node's keys
                        // read as misses, so the live nodes' hits still count.
                        Err(error) => {
                            metrics::counter!(
                                m::PROXY_MULTIGET_MISSES_TOTAL,
                                "node" => error.node().to_string()
                            )
                            .increment(1);
                            items.push(None);
                        }
                    }
                }
                Reply {
                    frame,
                    key,
                    response: failure.unwrap_or(Response::Get(items)),
                    command: kind,
                    started,
                    close: false,
                }
            });
        }
        command => {
            let cluster = shared.cluster();
            let part = start_routed(&cluster, command, frame.clone(), slot).await;
            let timeout = shared.timeout;
            return Box::pin(async move {
                Reply {
                    frame,
                    key,
                    response: part.resolve(timeout).await,
                    command: kind,
                    started,
                    close: false,
                }
            });
        }
    };
    ready(frame, key, response, kind, started)
}

/// One upstream request in flight (or one that could not start).
enum Part {
    Waiting {
        node: Arc<Node>,
        conn: super::upstream::Connection,
        reply: PendingReply,
        sent: Instant,
    },
    Failed(UpstreamError),
}

/// Start `command` (framed as the client framed it) on the node that serves
/// its key. In eject mode, a node found dead by this very request hands it on
/// to the node the live ring picks.
async fn start_routed(
    cluster: &Cluster,
    command: Command,
    frame: Frame,
    slot: &mut Option<usize>,
) -> Part {
    let key = command.key().cloned().unwrap_or_default();
    let key = key.as_ref();
    let node = match cluster.route(key) {
        Ok(node) => node,
        Err(error) => return Part::Failed(error),
    };
    if cluster.failover() == Failover::Error {
        return start(cluster, node, command, frame, slot).await;
    }
    let part = start(cluster, node, command.clone(), frame.clone(), slot).await;
    if let Part::Failed(_) = part {
        if !node.health.is_up() {
            if let Ok(next) = cluster.route(key) {
                if !Arc::ptr_eq(next, node) {
                    return start(cluster, next, command, frame, slot).await;
                }
            }
        }
    }
    part
}

/// Start `command` on `node`, on the client's slot (picking it by load if the
/// client has nothing in flight).
async fn start(
    cluster: &Cluster,
    node: &Arc<Node>,
    command: Command,
    frame: Frame,
    slot: &mut Option<usize>,
) -> Part {
    // The request's whole time, connect included, counts against its timeout.
    let sent = Instant::now();
    let deadline = tokio::time::Instant::from_std(sent + cluster.settings.request_timeout);
    let wanted = *slot.get_or_insert_with(|| node.pick_slot());
    let conn = match node.connection(&cluster.settings, wanted, deadline).await {
        Ok((used, conn)) => {
            *slot = Some(used);
            conn
        }
        Err(error) => return Part::Failed(error),
    };
    match conn.send(command, frame) {
        Ok(reply) => Part::Waiting {
            node: Arc::clone(node),
            conn,
            reply,
            sent,
        },
        Err(error) => Part::Failed(error),
    }
}

/// What a client gets for a request its node's protocol cannot carry: the
/// flag named, so that it knows what to drop.
fn unsupported(what: &str) -> Response {
    Response::Error(ErrorReply::Client(format!(
        "{what} not supported through memgate proxy to a binary-only node"
    )))
}

impl Part {
    /// Wait for the reply, at most `timeout` from when it was sent, and
    /// answer an upstream failure as memcached's proxies do.
    async fn resolve(self, timeout: std::time::Duration) -> Response {
        match self.outcome(timeout).await {
            Ok(response) => response,
            Err(UpstreamError::Unsupported(what)) => unsupported(what),
            Err(other) => Response::Error(ErrorReply::Server(other.to_string())),
        }
    }

    /// The reply, or why there is none (counted against the node).
    async fn outcome(self, timeout: std::time::Duration) -> Result<Response, UpstreamError> {
        match self {
            Part::Failed(error) => Err(error),
            Part::Waiting {
                node,
                conn,
                reply,
                sent,
            } => {
                let deadline = tokio::time::Instant::from_std(sent + timeout);
                let outcome = tokio::time::timeout_at(deadline, reply).await;
                node.upstream_latency.record(sent.elapsed().as_secs_f64());
                node.upstream_requests.increment(1);
                let name = || node.target.name.clone();
                let error = match outcome {
                    Ok(Ok(Ok(response))) => return Ok(response),
                    Ok(Ok(Err(error))) => error,
                    Ok(Err(_)) => UpstreamError::Io {
                        node: name(),
                        reason: "connection closed".into(),
                    },
                    Err(_) => {
                        // A connection with a request lost in it is never reused.
                        conn.close();
                        UpstreamError::Timeout {
                            node: name(),
                            timeout,
                        }
                    }
                };
                node.failed(&error);
                Err(error.on(&node.target.name))
            }
        }
    }
}

/// flush_all across nodes: OK only if every node said OK.
fn merge_all_ok(results: Vec<Response>) -> Response {
    results
        .into_iter()
        .find(|r| !matches!(r, Response::Ok))
        .unwrap_or(Response::Ok)
}

/// `stats` across nodes: numeric counters summed, the rest from the first node.
fn merge_stats(results: Vec<Response>) -> Response {
    const NOT_SUMMED: &[&str] = &[
        "pid",
        "uptime",
        "time",
        "version",
        "pointer_size",
        "threads",
        "max_connections",
    ];
    let mut merged: Vec<(String, String)> = Vec::new();
    for result in results {
        let Response::Stats(pairs) = result else {
            return result;
        };
        for (name, value) in pairs {
            match merged.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) if !NOT_SUMMED.contains(&name.as_str()) => {
                    if let (Ok(a), Ok(b)) = (total.parse::<u64>(), value.parse::<u64>()) {
                        *total = (a + b).to_string();
                    }
                }
                Some(_) => {}
                None => merged.push((name, value)),
            }
        }
    }
    Response::Stats(merged)
}
