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
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot::error::RecvError;

use super::budget::Budget;
use super::drain::Signal;
use super::pins::Pins;
use super::pool::{Cluster, Failover, Upstream};
use super::stats;
use super::upstream::{internal_frame, NoReply, PendingReply, UpstreamError};
use super::ProxyShared;
use crate::metrics as m;
use crate::protocol::input::{self, Input, Next, FLUSH_THRESHOLD};
use crate::protocol::request::{Command, CommandKind, Frame, Get, StoreMode};
use crate::protocol::{self, ErrorReply, Found, Request, Response};
use crate::session::{self, SessionError};

/// Replies a client may have outstanding before we stop reading from it.
const MAX_PENDING: usize = 1024;

/// A reply to come, in request order.
enum Pending {
    /// Known at once (one the session answers itself).
    Ready(ClientReply),
    /// One upstream request, the common case: polled in place, with its
    /// deadline kept by the session's one timer rather than a timer of its
    /// own (see `serve`).
    Single {
        head: Head,
        part: Part,
        /// Its deadline passed while it waited.
        expired: bool,
        /// For a replicated read, the cluster it was routed by: it is tried
        /// on the key's next replica there if this one fails
        /// (`replica::Again`).
        retry: Option<Arc<Cluster>>,
    },
    /// Several upstream requests merged into one reply (a multi-key get,
    /// `stats`, `flush_all`): a future of its own, which keeps its own time.
    Merged(MergedReply),
    /// A request that takes upstream round trips one after another,
    /// running in the session's `Running` set: `result` is set once it has
    /// finished.
    Running {
        head: Head,
        id: u64,
        result: Option<Result<Response, UpstreamError>>,
    },
}

/// A reply that is a future of its own (`Pending::Merged`).
type MergedReply = Pin<Box<dyn Future<Output = ClientReply> + Send>>;

/// How a pending reply came to be ready.
enum End {
    /// It was known all along (`Ready`, or a request that never started).
    Known,
    /// Its upstream reply, or the loss of its connection.
    Replied(Result<super::upstream::Replied, RecvError>),
    /// Its deadline passed first.
    TimedOut,
    /// A merged reply, complete.
    Merged(ClientReply),
    /// A running request's result is in (`Pending::Running`).
    Ran,
}

impl Pending {
    /// Ready once the reply is in; the reply is then taken with `into_reply`.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        match self {
            Pending::Ready(_) => Poll::Ready(End::Known),
            Pending::Single { part, expired, .. } => match part {
                Part::Failed(_) => Poll::Ready(End::Known),
                Part::Waiting { reply, .. } => match Pin::new(reply).poll(cx) {
                    Poll::Ready(replied) => Poll::Ready(End::Replied(replied)),
                    Poll::Pending if *expired => Poll::Ready(End::TimedOut),
                    Poll::Pending => Poll::Pending,
                },
            },
            Pending::Merged(future) => future.as_mut().poll(cx).map(End::Merged),
            Pending::Running { result, .. } => match result {
                Some(_) => Poll::Ready(End::Ran),
                None => Poll::Pending,
            },
        }
    }

    /// The reply, once `poll_end` gave `end`; `now` is when it came.
    fn into_reply(self, end: End, now: Instant) -> ClientReply {
        match (self, end) {
            (_, End::Merged(reply)) => reply,
            (Pending::Ready(reply), _) => reply,
            (
                Pending::Running {
                    head,
                    result: Some(result),
                    ..
                },
                _,
            ) => ClientReply {
                head,
                response: result.unwrap_or_else(error_response),
                close: false,
            },
            (Pending::Single { head, part, .. }, end) => {
                let response = part.settle(end, now).unwrap_or_else(error_response);
                ClientReply {
                    head,
                    response,
                    close: false,
                }
            }
            // A merged future is only ever ready as End::Merged, a running
            // request once its result is in.
            (Pending::Merged(_), _) => unreachable!("a merged reply ends as End::Merged"),
            (Pending::Running { .. }, _) => {
                unreachable!("a running request ends with its result")
            }
        }
    }

    /// The reply, once `poll_end` gave `end`; or, for a replicated read
    /// that failed on one replica, its try on the next, pending in its
    /// place.
    fn reply_or_retry(self, end: End, now: Instant) -> Result<ClientReply, MergedReply> {
        let Pending::Single {
            head,
            part,
            retry: Some(cluster),
            ..
        } = self
        else {
            return Ok(self.into_reply(end, now));
        };
        match part.settle_keeping(end, now) {
            Err((error, Some(again))) if replica::failure_of_node(&error) => {
                let frame = head.frame.clone();
                Err(Box::pin(async move {
                    let response = again.run(cluster, frame).await;
                    ClientReply {
                        head,
                        response: response.unwrap_or_else(error_response),
                        close: false,
                    }
                }))
            }
            result => Ok(ClientReply {
                head,
                response: result
                    .map_err(|(error, _)| error)
                    .unwrap_or_else(error_response),
                close: false,
            }),
        }
    }

    /// When the session's timer must next look at this request, if ever.
    fn deadline(&self) -> Option<Instant> {
        match self {
            Pending::Single {
                part: Part::Waiting { deadline, .. },
                expired: false,
                ..
            } => Some(*deadline),
            _ => None,
        }
    }

    /// Mark the request timed out if its deadline has passed by `now`.
    fn expire_if_due(&mut self, now: Instant) {
        let due = self.deadline().is_some_and(|deadline| deadline <= now);
        if let Pending::Single { expired, .. } = self {
            *expired |= due;
        }
    }
}

/// What a reply carries besides its response.
struct Head {
    frame: Frame,
    /// The request's key, for meta replies that echo it.
    key: Option<bytes::Bytes>,
    command: CommandKind,
    started: Instant,
}

struct ClientReply {
    head: Head,
    response: Response,
    close: bool,
}

/// Serve one client until it quits or disconnects.
pub async fn serve<S>(
    mut stream: S,
    shared: Arc<ProxyShared>,
    stop: Arc<Signal>,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    // Reads and writes take turns in this one task, so the stream is used
    // whole: `tokio::io::split` would lock it on every read and write.
    let limits = protocol::Limits {
        max_item_size: shared.max_item_size,
    };
    // Which upstream connection this client uses on each node while it has
    // requests in flight; chosen afresh (by load) whenever it has none.
    let mut pins = Pins::default();
    // What this session holds for its client: past the limit it takes no new
    // request and reads nothing until replies are written (`proxy::budget`).
    let mut budget = Budget::new(shared.client_buffer);
    // A request read whose charge did not fit the budget yet, with its
    // weight: taken first once replies are written. Nothing more is read
    // meanwhile.
    let mut stashed: Option<(Request, (usize, usize))> = None;
    let mut input = Input::default();
    let mut wbuf = BytesMut::new();
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut running = Running::default();
    let mut first_command = true;
    let mut closing = false;
    let mut draining = false;
    // One timer for the whole session, not one per request: a timer per
    // request was a wheel insert and removal each, about a tenth of the
    // sidecar's instructions per request. Replies are awaited in request
    // order, and deadlines grow in that order, so the front's deadline is
    // the only one that matters. The timer is moved earlier when the front
    // needs it, never later: armed at an older request's deadline, it fires
    // early, looks at the front, and re-arms for it. Under steady traffic it
    // fires about once per timeout, whatever the request rate.
    let timer = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    // Replies encoded into `wbuf` and not yet counted: they are counted once
    // written, so that recording never delays a reply.
    let mut served: Vec<Served> = Vec::new();

    loop {
        // Start every request already buffered, while there is room in the
        // queue (also after the queue drained with input still buffered).
        // Set when a request may be buffered that the budget held back: it
        // is taken once the replies before it are written.
        let mut held_back = false;
        while queue.len() < MAX_PENDING && !closing {
            if !budget.has_room(wbuf.len()) {
                held_back = true;
                break;
            }
            // One snapshot routes the request and decides the barrier, so that
            // a reload between the two cannot slip past it.
            let cluster = shared.cluster();
            if queue.is_empty() {
                pins.clear();
            } else if pins.outdated(cluster.generation) {
                // A reload since this client's requests in flight were
                // routed: wait for them before sending more (`proxy::pins`).
                break;
            }
            let next = match stashed.take() {
                Some((request, weight)) => Some((Next::Request(request), Some(weight))),
                None => input.next(&limits)?.map(|next| (next, None)),
            };
            match next {
                None => break,
                Some((Next::Request(request), known)) => {
                    let (bytes, parts) =
                        known.unwrap_or_else(|| weight(&request.command, &cluster));
                    if !budget.fits(bytes, parts, wbuf.len()) {
                        stashed = Some((request, (bytes, parts)));
                        held_back = true;
                        break;
                    }
                    let pending = dispatch(
                        &shared,
                        &cluster,
                        request,
                        first_command,
                        &mut pins,
                        &mut running,
                    )
                    .await;
                    first_command = false;
                    queue.push_back(pending);
                    budget.take(bytes, parts);
                }
                Some((
                    Next::Reject {
                        frame,
                        error,
                        unlink,
                    },
                    _,
                )) => {
                    let started = Instant::now();
                    // Like memcached, a refused over-size set removes the old value.
                    if let Some(key) = unlink {
                        let delete = Command::Delete(protocol::request::Delete {
                            key,
                            cas: None,
                            invalidate: false,
                            exptime: None,
                        });
                        let mut now = started;
                        let _ = Box::pin(start_keyed(
                            &cluster,
                            delete,
                            internal_frame(),
                            &mut pins,
                            &mut now,
                        ))
                        .await
                        .outcome(&internal_frame())
                        .await;
                    }
                    let head = Head {
                        frame,
                        key: None,
                        command: CommandKind::Other,
                        started,
                    };
                    queue.push_back(ready(head, Response::Error(error)));
                    budget.take(0, 0);
                }
            }
        }
        // Encode every reply that is already complete, in order.
        while let Some(front) = queue.front_mut() {
            let end = std::future::poll_fn(|cx| Poll::Ready(front.poll_end(cx))).await;
            let Poll::Ready(end) = end else { break };
            let Some(done) = queue.pop_front() else { break };
            let now = Instant::now();
            let reply = match done.reply_or_retry(end, now) {
                Ok(reply) => reply,
                Err(retry) => {
                    queue.push_front(Pending::Merged(retry));
                    continue;
                }
            };
            let before = wbuf.len();
            closing |= finish(reply, now, &mut wbuf, &mut served);
            budget.answered(wbuf.len() - before);
            if closing {
                break;
            }
        }
        if !wbuf.is_empty() && (queue.is_empty() || wbuf.len() >= FLUSH_THRESHOLD || closing) {
            let written = write_out(&mut stream, &wbuf).await;
            let metrics = m::RequestMetrics::get();
            for done in served.drain(..) {
                metrics.record(done.command, done.result, done.seconds);
            }
            written?;
            if let Some(poll) = &shared.busy_poll {
                poll.replied(Instant::now());
            }
            metrics.written_bytes.increment(wbuf.len() as u64);
            input::written(&mut wbuf);
        }
        if closing || (draining && queue.is_empty() && stashed.is_none()) {
            return Ok(());
        }
        let room = match &stashed {
            Some((_, (bytes, parts))) => budget.fits(*bytes, *parts, wbuf.len()),
            None => budget.has_room(wbuf.len()),
        };
        if held_back && room {
            continue;
        }
        if let Some(deadline) = queue.front().and_then(Pending::deadline) {
            if armed.is_none_or(|at| at > deadline) {
                timer.as_mut().reset(deadline.into());
                armed = Some(deadline);
            }
        }

        // Nothing more is read while a reload holds this client's next
        // request back, so that its input stays bounded.
        let held = !queue.is_empty() && pins.outdated(shared.generation());
        let can_read = queue.len() < MAX_PENDING && !draining && !held && stashed.is_none() && room;
        let in_flight = !queue.is_empty();
        let front = std::future::poll_fn(|cx| match queue.front_mut() {
            Some(front) => front.poll_end(cx),
            None => Poll::Pending,
        });
        let read = tokio::select! {
            biased;
            Some((id, outcome)) = std::future::poll_fn(|cx| running.poll_next(cx)), if !running.is_empty() => {
                Running::finished(&mut queue, id, outcome);
                continue;
            }
            end = front => {
                if let Some(done) = queue.pop_front() {
                    let now = Instant::now();
                    match done.reply_or_retry(end, now) {
                        Ok(reply) => {
                            let before = wbuf.len();
                            closing |= finish(reply, now, &mut wbuf, &mut served);
                            budget.answered(wbuf.len() - before);
                        }
                        Err(retry) => queue.push_front(Pending::Merged(retry)),
                    }
                }
                continue;
            }
            // With nothing in flight the timer can wait unpolled: a request
            // started later has a later deadline, which it never fires after.
            () = &mut timer, if armed.is_some() && in_flight => {
                armed = None;
                if let Some(front) = queue.front_mut() {
                    front.expire_if_due(Instant::now());
                }
                continue;
            }
            // On shutdown: read nothing more, answer what is in flight, close.
            () = std::future::poll_fn(|cx| stop.poll(cx)), if !draining => {
                draining = true;
                continue;
            }
            read = stream.read_buf(input.read_buf()), if can_read => read?,
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

/// What a request weighs in its client's budget: the bytes it carries (a
/// value to store) and the upstream replies it will get.
fn weight(command: &Command, cluster: &Cluster) -> (usize, usize) {
    match command {
        Command::Store(store) => (store.data.len(), 1),
        Command::Get(get) => (0, get.keys.len()),
        Command::FlushAll { .. } | Command::Stats { .. } => (0, cluster.nodes.len()),
        _ => (0, 1),
    }
}

/// A written reply's entry in the request metrics.
struct Served {
    command: CommandKind,
    /// An index into metrics::RESULT_LABELS.
    result: usize,
    seconds: f64,
}

/// Write out the encoded replies.
async fn write_out<S: AsyncWrite + Unpin>(stream: &mut S, wbuf: &[u8]) -> std::io::Result<()> {
    stream.write_all(wbuf).await?;
    stream.flush().await
}

/// Encode a finished reply and note it in `served`; true if the client asked
/// to close.
fn finish(reply: ClientReply, now: Instant, out: &mut BytesMut, served: &mut Vec<Served>) -> bool {
    // Indexes into metrics::RESULT_LABELS.
    let result = match &reply.response {
        Response::Error(ErrorReply::Server(_)) => 3,
        Response::Error(_) => 2,
        Response::Get(items) if items.iter().all(Option::is_none) => 1,
        Response::NotFound => 1,
        _ => 0,
    };
    let head = &reply.head;
    let seconds = now.saturating_duration_since(head.started).as_secs_f64();
    served.push(Served {
        command: head.command,
        result,
        seconds,
    });
    protocol::encode_owned(&head.frame, head.key.as_deref(), reply.response, out);
    reply.close
}

/// A reply known at once (one the session answers itself).
fn ready(head: Head, response: Response) -> Pending {
    Pending::Ready(ClientReply {
        head,
        response,
        close: false,
    })
}

/// Route one request and start it; the returned pending reply yields its reply.
async fn dispatch(
    shared: &Arc<ProxyShared>,
    cluster: &Arc<Cluster>,
    request: Request,
    first_command: bool,
    pins: &mut Pins,
    running: &mut Running,
) -> Pending {
    let key = request.echoed_key();
    let Request { command, frame } = request;
    let started = Instant::now();
    // When the next upstream part starts (see `start`).
    let mut now = started;
    let head = Head {
        key,
        command: command.kind(),
        started,
        frame,
    };
    if let Some(response) = session::local_answer(&command, crate::VERSION) {
        return ready(head, response);
    }
    let response = match command {
        // The sidecar logs in for the client: any login is accepted.
        Command::SaslAuth { .. } | Command::SaslStep { .. } => Response::AuthOk,
        Command::Store(ref store)
            if first_command
                && matches!(head.frame, Frame::Text(_))
                && store.mode == StoreMode::Set
                && shared.is_ascii_login(&store.key, &store.data) =>
        {
            Response::Stored { cas: 0 }
        }
        Command::Quit => {
            let response = session::quit_reply(&head.frame);
            return Pending::Ready(ClientReply {
                head,
                response,
                close: true,
            });
        }
        Command::FlushAll { .. } | Command::Stats { .. } => {
            let mut parts = Vec::with_capacity(cluster.nodes.len());
            for node in &cluster.nodes {
                let frame = head.frame.clone();
                parts.push(start(cluster, node, command.clone(), frame, pins, &mut now).await);
            }
            // A flush also empties the nodes a warm-up still reads, or a
            // fallback would bring back what it removed everywhere else.
            let mut previous = Vec::new();
            if let (Some(warm), Command::FlushAll { .. }) = (cluster.warmup(), &command) {
                for node in warm.previous_nodes() {
                    if !cluster.nodes.iter().any(|n| Arc::ptr_eq(n, node)) {
                        let frame = internal_frame();
                        let part = start(cluster, node, command.clone(), frame, pins, &mut now);
                        previous.push((Arc::clone(warm), Arc::clone(node), part.await));
                    }
                }
            }
            let max_item_size = shared.max_item_size;
            return Pending::Merged(Box::pin(async move {
                for (warm, node, part) in previous {
                    if !matches!(part.outcome().await, Ok(Response::Ok)) {
                        warm.abandon(&node);
                    }
                }
                let mut results = Vec::with_capacity(parts.len());
                for part in parts {
                    results.push(part.outcome().await.unwrap_or_else(error_response));
                }
                let response = match command {
                    Command::Stats { group } => {
                        stats::merge(results, group.as_deref(), max_item_size)
                    }
                    _ => merge_all_ok(results),
                };
                ClientReply {
                    head,
                    response,
                    close: false,
                }
            }));
        }
        Command::Get(get) if get.keys.len() > 1 => {
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
                    keys: smallvec::smallvec![one_key],
                    touch,
                    vivify,
                    recache_below,
                    no_bump,
                });
                let frame = head.frame.clone();
                let plain = cluster.warmup().is_none() && cluster.replication.replicas == 1;
                let part = match plain {
                    true => Routed::Plain(start_routed(cluster, one, frame, pins, &mut now).await),
                    false => match replica::steady_now(cluster, one, frame, pins, now) {
                        replica::Now::Sent(part) => Routed::Steady(part, Arc::clone(cluster)),
                        replica::Now::Declined(one, frame) => {
                            Box::pin(start_keyed(cluster, one, frame, pins, &mut now)).await
                        }
                    },
                };
                parts.push(part);
            }
            return Pending::Merged(Box::pin(async move {
                let mut items: Vec<Option<Found>> = Vec::with_capacity(parts.len());
                let mut failure = None;
                for part in parts {
                    match part.outcome(&head.frame).await {
                        Ok(Response::Get(mut found)) => items.push(found.pop().flatten()),
                        Ok(other) => {
                            failure.get_or_insert(other);
                            items.push(None);
                        }
                        // A command the upstream cannot say fails as a whole.
                        Err(
                            error @ (UpstreamError::Unsupported(_) | UpstreamError::NotCarried(_)),
                        ) => {
                            failure.get_or_insert(error_response(error));
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
                ClientReply {
                    head,
                    response: failure.unwrap_or(Response::Get(items)),
                    close: false,
                }
            }));
        }
        command => {
            let frame = head.frame.clone();
            // No warm-up and no replicas: the plain path, without their wrapping.
            if cluster.warmup().is_none() && cluster.replication.replicas == 1 {
                let part = start_routed(cluster, command, frame, pins, &mut now).await;
                return Pending::Single {
                    head,
                    part,
                    expired: false,
                    retry: None,
                };
            }
            // A replicated read as one request, as an unreplicated one is.
            let (command, frame) = match replica::steady_now(cluster, command, frame, pins, now) {
                replica::Now::Sent(part) => {
                    return Pending::Single {
                        head,
                        part,
                        expired: false,
                        retry: Some(Arc::clone(cluster)),
                    }
                }
                replica::Now::Declined(command, frame) => (command, frame),
            };
            // A replicated write sent to its authority at once, and finished
            // by a task of its own.
            let (command, frame) = match replica::write_now(cluster, command, frame, pins, now) {
                replica::Now::Sent(outcome) => return running.start(head, outcome),
                replica::Now::Declined(command, frame) => (command, frame),
            };
            // Boxed, as the rarer path (see `start`).
            let started = Box::pin(start_keyed(cluster, command, frame, pins, &mut now));
            return match started.await {
                Routed::Plain(part) => Pending::Single {
                    head,
                    part,
                    expired: false,
                    retry: None,
                },
                Routed::Steady(part, cluster) => Pending::Single {
                    head,
                    part,
                    expired: false,
                    retry: Some(cluster),
                },
                Routed::Moved(outcome) => Pending::Merged(Box::pin(async move {
                    ClientReply {
                        head,
                        response: outcome.await.unwrap_or_else(error_response),
                        close: false,
                    }
                })),
                Routed::Running(outcome) => running.start(head, outcome),
            };
        }
    };
    ready(head, response)
}

/// One upstream request in flight (or one that could not start).
enum Part {
    Waiting {
        node: Arc<Upstream>,
        conn: super::upstream::Connection,
        reply: PendingReply,
        sent: Instant,
        /// When it times out: its send plus the request timeout, connect
        /// included.
        deadline: Instant,
    },
    Failed(UpstreamError),
}

/// A keyed request started: on its node, or on two while a warm-up covers
/// its key (`moved`), or on its replicas (`replica`).
enum Routed {
    Plain(Part),
    /// Polled only once it is the client's oldest request: it may go on to
    /// other nodes, and relies on every reply before it being in first.
    Moved(moved::Outcome),
    /// Started on its replicas, to be polled as its replies come in
    /// (`Running`).
    Running(moved::Outcome),
    /// A replicated read on one replica, tried on the next if it fails,
    /// with the cluster it was routed by.
    Steady(Part, Arc<Cluster>),
}

impl Routed {
    /// The reply; `frame` is the request's, for a replicated read tried
    /// again.
    async fn outcome(self, frame: &Frame) -> Result<Response, UpstreamError> {
        match self {
            Routed::Plain(part) => part.outcome().await,
            Routed::Moved(outcome) | Routed::Running(outcome) => outcome.await,
            Routed::Steady(part, cluster) => match part.outcome_keeping().await {
                Err((error, Some(again))) if replica::failure_of_node(&error) => {
                    again.run(cluster, frame.clone()).await
                }
                other => other.map_err(|(error, _)| error),
            },
        }
    }
}

/// Start `command` on the node that serves its key, or on both of its nodes
/// while a warm-up covers it (`moved`).
async fn start_keyed(
    cluster: &Arc<Cluster>,
    command: Command,
    frame: Frame,
    pins: &mut Pins,
    now: &mut Instant,
) -> Routed {
    if cluster.replication.replicas > 1 && command.key().is_some() {
        return replica::start_replicated(cluster, command, frame, pins, now).await;
    }
    if let Some(warm) = cluster.warmup() {
        let key = command.key().map_or(&[][..], |key| key.as_ref());
        if let Ok(home) = cluster.route(key) {
            if let Some(moved) = warm.moved(key, home) {
                let primary = moved.primary;
                let started = moved::start_moved(cluster, warm, moved, &command, &frame, pins, now);
                return match started.await {
                    Some(outcome) => Routed::Moved(outcome),
                    None => Routed::Plain(start(cluster, primary, command, frame, pins, now).await),
                };
            }
        }
    }
    Routed::Plain(start_routed(cluster, command, frame, pins, now).await)
}

/// Start `command` (framed as the client framed it) on the node that serves
/// its key. In eject mode, a node found dead by this very request hands it on
/// to the node the live ring picks.
async fn start_routed(
    cluster: &Cluster,
    command: Command,
    frame: Frame,
    pins: &mut Pins,
    now: &mut Instant,
) -> Part {
    let routed = cluster.route(command.key().map_or(&[][..], |key| key.as_ref()));
    let node = match routed {
        Ok(node) => node,
        Err(error) => return Part::Failed(error),
    };
    if cluster.failover() == Failover::Error {
        return start(cluster, node, command, frame, pins, now).await;
    }
    // Eject mode may route again once the command is gone: keep the key.
    let key = command.key().cloned().unwrap_or_default();
    let key = key.as_ref();
    let part = start(cluster, node, command.clone(), frame.clone(), pins, now).await;
    if let Part::Failed(_) = part {
        if !node.health.is_up() {
            if let Ok(next) = cluster.route(key) {
                if !Arc::ptr_eq(next, node) {
                    return start(cluster, next, command, frame, pins, now).await;
                }
            }
        }
    }
    part
}

/// Start `command` on `node`, on the client's connection there (picked by
/// load if the client has nothing in flight there: `proxy::pins`). `now` is
/// when the client's request arrived, moved on if the request had to wait
/// for a connect.
async fn start(
    cluster: &Cluster,
    node: &Arc<Upstream>,
    command: Command,
    frame: Frame,
    pins: &mut Pins,
    now: &mut Instant,
) -> Part {
    // The request's whole time, connect included, counts against its timeout.
    let timeout = cluster.settings.request_timeout;
    // The common case, without the connect path's future.
    if let Some(conn) = pins.get(node) {
        return send(node, conn.clone(), command, &frame, *now, timeout);
    }
    // Boxed: the connect path's state would otherwise enlarge every
    // request's future, and moving it costs on the common path.
    match Box::pin(connection_for(cluster, node, pins, now)).await {
        Ok(conn) => send(node, conn, command, &frame, *now, timeout),
        Err(error) => Part::Failed(error),
    }
}

/// The client's connection to `node`: its pinned one, or one picked by load
/// and pinned from now on. `now` moves on if it had to wait for a connect.
async fn connection_for(
    cluster: &Cluster,
    node: &Arc<Upstream>,
    pins: &mut Pins,
    now: &mut Instant,
) -> Result<super::upstream::Connection, UpstreamError> {
    if let Some(conn) = pins.get(node) {
        return Ok(conn.clone());
    }
    let timeout = cluster.settings.request_timeout;
    let connected = node.connection(&cluster.settings, (*now + timeout).into());
    match connected.await {
        Ok((conn, at_once)) => {
            pins.pin(cluster.generation, node, conn.clone());
            // Waited for a connect: the parts of a multi-key get started
            // after this one take their time from now, or they would begin
            // already late, time out at once, and close healthy connections.
            if !at_once {
                *now = Instant::now();
            }
            Ok(conn)
        }
        Err(error) => {
            // It may have waited out the whole deadline (see above).
            *now = Instant::now();
            Err(error)
        }
    }
}

/// Send `command` on `conn`, as of `sent`.
fn send(
    node: &Arc<Upstream>,
    conn: super::upstream::Connection,
    command: Command,
    frame: &Frame,
    sent: Instant,
    timeout: std::time::Duration,
) -> Part {
    try_send(node, conn, command, frame, sent, timeout)
        .unwrap_or_else(|unsent| Part::Failed(unsent.error))
}

/// `send`, which hands the command back if it could not be sent.
fn try_send(
    node: &Arc<Upstream>,
    conn: super::upstream::Connection,
    command: Command,
    frame: &Frame,
    sent: Instant,
    timeout: std::time::Duration,
) -> Result<Part, NoReply> {
    let reply = conn.send(command, frame, sent)?;
    Ok(Part::sent(node, conn, reply, sent, timeout))
}

/// What a client gets for a request its node's protocol cannot carry: the
/// flag named, so that it knows what to drop.
fn unsupported(what: &str) -> Response {
    Response::Error(ErrorReply::Client(format!(
        "{what} not supported through memgate proxy to a binary-only node"
    )))
}

/// How a client is told of an upstream failure, as memcached's proxies do.
fn error_response(error: UpstreamError) -> Response {
    match error {
        UpstreamError::Unsupported(what) => unsupported(what),
        not_carried @ UpstreamError::NotCarried(_) => {
            Response::Error(ErrorReply::Client(not_carried.to_string()))
        }
        other => Response::Error(ErrorReply::Server(other.to_string())),
    }
}

impl Part {
    /// A request sent on `conn` to `node` at `sent`, its reply to come.
    fn sent(
        node: &Arc<Upstream>,
        conn: super::upstream::Connection,
        reply: PendingReply,
        sent: Instant,
        timeout: std::time::Duration,
    ) -> Part {
        Part::Waiting {
            node: Arc::clone(node),
            conn,
            reply,
            sent,
            deadline: sent + timeout,
        }
    }

    /// The node and connection it went out on, if it did.
    fn sent_on(&self) -> Option<(Arc<Upstream>, super::upstream::Connection)> {
        match self {
            Part::Waiting { node, conn, .. } => Some((Arc::clone(node), conn.clone())),
            Part::Failed(_) => None,
        }
    }

    /// Wait for the reply, until the part's deadline at most (for the
    /// merged replies; a single one is polled in place by the session).
    async fn outcome(self) -> Result<Response, UpstreamError> {
        self.outcome_keeping().await.map_err(|(error, _)| error)
    }

    /// `outcome`, as `settle_keeping` gives it.
    async fn outcome_keeping(
        mut self,
    ) -> Result<Response, (UpstreamError, Option<replica::Again>)> {
        let timer = std::pin::pin!(tokio::time::sleep_until(self.deadline().into()));
        let end = self.end_timed(timer).await;
        self.settle_keeping(end, Instant::now())
    }

    /// `outcome`, timed by `timer`, which is reset to the part's deadline:
    /// a request that makes round trips one after another keeps one timer
    /// for all of them (moving a timer's deadline later costs less than
    /// setting up another).
    async fn outcome_timed(
        mut self,
        timer: Pin<&mut tokio::time::Sleep>,
    ) -> Result<Response, UpstreamError> {
        let end = self.end_timed(timer).await;
        self.settle(end, Instant::now())
    }

    /// Wait for the reply, or for the part's deadline, which `timer` is
    /// reset to.
    async fn end_timed(&mut self, mut timer: Pin<&mut tokio::time::Sleep>) -> End {
        match self {
            Part::Failed(_) => End::Known,
            Part::Waiting {
                reply, deadline, ..
            } => {
                timer.as_mut().reset((*deadline).into());
                std::future::poll_fn(|cx| match Pin::new(&mut *reply).poll(cx) {
                    Poll::Ready(replied) => Poll::Ready(End::Replied(replied)),
                    Poll::Pending => timer.as_mut().poll(cx).map(|()| End::TimedOut),
                })
                .await
            }
        }
    }

    /// When the part times out (now, if it never went out).
    fn deadline(&self) -> Instant {
        match self {
            Part::Waiting { deadline, .. } => *deadline,
            Part::Failed(_) => Instant::now(),
        }
    }

    /// The reply, or why there is none (counted against the node).
    fn settle(self, end: End, now: Instant) -> Result<Response, UpstreamError> {
        self.settle_keeping(end, now).map_err(|(error, _)| error)
    }

    /// `settle`, which also gives back what it takes to try the command on
    /// another node when its connection handed it back (`NoReply`).
    fn settle_keeping(
        self,
        end: End,
        now: Instant,
    ) -> Result<Response, (UpstreamError, Option<replica::Again>)> {
        let (node, conn, mut reply, sent, deadline) = match self {
            Part::Failed(error) => return Err((error, None)),
            Part::Waiting {
                node,
                conn,
                reply,
                sent,
                deadline,
            } => (node, conn, reply, sent, deadline),
        };
        node.upstream_latency
            .record(now.saturating_duration_since(sent).as_secs_f64());
        node.upstream_requests.increment(1);
        let name = || node.target.name.clone();
        let (error, command) = match end {
            End::Replied(Ok(Ok(response))) => return Ok(response),
            End::Replied(Ok(Err(NoReply { error, command }))) => (error, command),
            End::Replied(Err(_)) | End::Known | End::Merged(_) | End::Ran => {
                let reason = "connection closed".into();
                (
                    UpstreamError::Io {
                        node: name(),
                        reason,
                    },
                    None,
                )
            }
            End::TimedOut => {
                // A connection with a request lost in it is never reused.
                conn.close();
                // Closing it failed the request, which handed its command
                // back; unless the reply came in meanwhile.
                let command = match reply.try_recv() {
                    Ok(Ok(response)) => return Ok(response),
                    Ok(Err(no_reply)) => no_reply.command,
                    Err(_) => None,
                };
                let timeout = deadline.saturating_duration_since(sent);
                (
                    UpstreamError::Timeout {
                        node: name(),
                        timeout,
                    },
                    command,
                )
            }
        };
        node.failed(&error);
        let error = error.on(&node.target.name);
        let again = command.map(|command| replica::Again::new(command, node));
        Err((error, again))
    }
}

/// flush_all across nodes: OK only if every node said OK.
fn merge_all_ok(results: Vec<Response>) -> Response {
    results
        .into_iter()
        .find(|r| !matches!(r, Response::Ok))
        .unwrap_or(Response::Ok)
}

mod copy;
mod moved;
mod replica;
mod running;

use running::Running;
#[cfg(test)]
mod tests;
