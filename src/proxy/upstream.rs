//! One long-lived, logged-in TLS connection to a node, shared by many clients.
//!
//! Requests are encoded in the connection's protocol ([`UpstreamProtocol`]):
//! meta (`protocol::meta::client`) after an ASCII login, or binary after SASL
//! PLAIN. They are pipelined; the node answers them in order, and every
//! reply's opaque (binary's header field, meta's `O<seq>`) must match the
//! oldest request in flight (a mismatch, or any reply that does not parse,
//! means the stream is corrupt: the connection is dropped, never reused). A
//! client's session writes its own request when the connection is idle
//! (`outbox`: flat combining); otherwise a writer task gathers the requests
//! that arrive together into one write, and it takes over any write that
//! cannot finish at once. A
//! reader task parses replies and completes each request's oneshot.
//!
//! memcached `-Z` stalls when a value larger than one TLS record is followed by
//! more pipelined input in the same burst (docs/ARCHITECTURE.md). So after writing a
//! request that large, the writer sends nothing more on this connection until
//! its reply has come back.
//!
//! The same stall hits smaller values too: memcached reads a value that is not
//! wholly in its read buffer straight from OpenSSL, and whatever follows it in
//! the same TLS record stays decrypted inside OpenSSL where its event loop never
//! looks. Any request that straddles two records is such a value. So batches
//! are handed to TLS in pieces of whole requests, each at most one record
//! (rustls starts a new record at every write and cuts records at 16 KiB), and
//! no request is ever split between records except one too large for a record,
//! which is written alone and last.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tokio_rustls::TlsConnector;

use crate::protocol::meta;
use crate::protocol::meta::client::{Expect, LoginForm};
use crate::protocol::request::{MetaFrame, TextFrame};
use crate::protocol::{binary, Command, Frame, Limits, Response};

/// Why an upstream request or connection failed. The kind is a metric label.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {node}: {reason}")]
    Connect {
        node: String,
        reason: String,
        /// Nothing listens there (the node's process is not running).
        refused: bool,
    },
    #[error("TLS with {node}: {reason}")]
    Tls { node: String, reason: String },
    #[error("login to {node} refused: {reason}")]
    Auth { node: String, reason: String },
    #[error("{node} did not answer within {timeout:?}")]
    Timeout { node: String, timeout: Duration },
    #[error("connection to {node} lost: {reason}")]
    Io { node: String, reason: String },
    #[error("{node} sent a reply that does not match the request in flight")]
    Protocol { node: String },
    #[error("{node} is down")]
    Down { node: String },
    /// What the upstream protocol cannot carry (a meta flag in front of a
    /// binary-only node, say), named for the client's `CLIENT_ERROR`.
    #[error("{0} not supported by the upstream protocol")]
    Unsupported(&'static str),
}

impl UpstreamError {
    /// Every `kind()`, for exporting each error series at 0 from start-up.
    pub const KINDS: &'static [&'static str] = &[
        "connect",
        "tls",
        "auth",
        "timeout",
        "io",
        "protocol",
        "down",
        "unsupported",
    ];

    /// Whether this failure says something about the node's health. A lost
    /// connection is retried on a fresh one; a refused command or a node
    /// already down is no new evidence.
    pub fn counts_against_health(&self) -> bool {
        !matches!(
            self,
            UpstreamError::Io { .. } | UpstreamError::Unsupported(_) | UpstreamError::Down { .. }
        )
    }

    /// Whether this failure alone shows the node cannot serve: nothing
    /// listens, its certificate is refused, or it refused our login. Such a
    /// node is marked down at once (and probed); a timeout or a reset only
    /// counts towards the failure limit, since one slow moment is no outage.
    pub fn is_definitive(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { refused: true, .. }
                | UpstreamError::Tls { .. }
                | UpstreamError::Auth { .. }
        )
    }

    /// The node it happened on ("" when not known here).
    pub fn node(&self) -> &str {
        match self {
            UpstreamError::Connect { node, .. }
            | UpstreamError::Tls { node, .. }
            | UpstreamError::Auth { node, .. }
            | UpstreamError::Timeout { node, .. }
            | UpstreamError::Io { node, .. }
            | UpstreamError::Protocol { node }
            | UpstreamError::Down { node } => node,
            UpstreamError::Unsupported(_) => "",
        }
    }

    /// The same error, naming `node` if it did not say which.
    pub fn on(mut self, name: &str) -> UpstreamError {
        if let UpstreamError::Io { node, .. } = &mut self {
            if node.is_empty() {
                name.clone_into(node);
            }
        }
        self
    }

    /// A bounded label for metrics and state-change logs.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::Tls { .. } => "tls",
            UpstreamError::Auth { .. } => "auth",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Io { .. } => "io",
            UpstreamError::Protocol { .. } => "protocol",
            UpstreamError::Down { .. } => "down",
            UpstreamError::Unsupported(_) => "unsupported",
        }
    }
}

/// Where and how to reach one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The node's ring identity, used in logs and metric labels.
    pub name: String,
    /// host:port to connect to.
    pub addr: String,
    /// The name its certificate must carry.
    pub server_name: rustls_pki_types::ServerName<'static>,
}

/// What the proxy speaks to its nodes (`--upstream-protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamProtocol {
    /// Meta, after MemCachier's ASCII login: memgate nodes (the default).
    #[default]
    Meta,
    /// Meta, after memcached's `-Y` ASCII login: `memcached -Y <authfile> -Z`.
    MetaMemcached,
    /// Binary, after SASL PLAIN: `memcached -S -Z`, which has no text
    /// protocol. Meta flags binary cannot carry are refused.
    Binary,
}

impl UpstreamProtocol {
    /// The ASCII login a meta upstream takes; `None` for binary.
    pub fn login_form(self) -> Option<LoginForm> {
        match self {
            UpstreamProtocol::Meta => Some(LoginForm::MemCachier),
            UpstreamProtocol::MetaMemcached => Some(LoginForm::Memcached),
            UpstreamProtocol::Binary => None,
        }
    }
}

/// What every upstream connection shares.
#[derive(Clone)]
pub struct Settings {
    pub tls: TlsConnector,
    pub protocol: UpstreamProtocol,
    pub username: String,
    pub password: String,
    /// A connect (TCP, TLS and login) that takes longer than this fails.
    /// It may exceed the request timeout: requests stop waiting for it at
    /// their own deadline, while it goes on in the background.
    pub connect_timeout: Duration,
    /// How long a client request may take, for error messages.
    pub request_timeout: Duration,
    /// An idle connection is pinged this often, so that a NAT or load
    /// balancer between here and the node never forgets it, and a dead one
    /// is found and replaced before a request needs it.
    pub keepalive: Duration,
    /// See `ProxyConfig::tls_fingerprint`.
    pub tls_fingerprint: Option<u64>,
}

impl Settings {
    /// Whether connections made with `other` would log in the same way, so
    /// that a reload may keep the ones made with these.
    pub fn same_login(&self, other: &Settings) -> bool {
        self.username == other.username
            && self.password == other.password
            && self.protocol == other.protocol
            && match (self.tls_fingerprint, other.tls_fingerprint) {
                (Some(a), Some(b)) => a == b,
                _ => Arc::ptr_eq(self.tls.config(), other.tls.config()),
            }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("protocol", &self.protocol)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where a request's reply goes. It also counts the request in its
/// connection's load until it is answered or dropped, whichever path (reply,
/// failure, aborted task) gets there.
struct Reply {
    tx: Option<oneshot::Sender<Result<Response, UpstreamError>>>,
    load: Arc<AtomicUsize>,
}

impl Reply {
    fn send(mut self, result: Result<Response, UpstreamError>) {
        if let Some(tx) = self.tx.take() {
            // The caller may have given up (timeout, client gone): nothing to do.
            let _ = tx.send(result);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A reply to come; a dropped sender means the connection was lost.
pub type PendingReply = oneshot::Receiver<Result<Response, UpstreamError>>;

/// A request written and waiting for its reply.
struct InFlight {
    opaque: u32,
    /// The shape of its meta reply (binary replies carry their own).
    expect: Expect,
    command: Command,
    reply: Reply,
    /// Replies so far (STAT answers with many packets).
    stats: Vec<(String, String)>,
    /// Set for a large request: the writer waits on it.
    done: Option<Arc<Notify>>,
}

/// What every handle to one connection shares. When the last handle goes
/// (the pool replaced it and no request is in flight on it), its tasks end.
struct Shared {
    outbox: Arc<Mutex<Outbox>>,
    inflight: Arc<Mutex<VecDeque<InFlight>>>,
    /// Hands the outbox to the writer task.
    work: Arc<Notify>,
    alive: Arc<AtomicBool>,
    /// Requests queued or in flight, for the pool's choice of connection.
    load: Arc<AtomicUsize>,
    /// When a request was last queued, in milliseconds of `since_start`.
    last_used: AtomicU64,
    meta: bool,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Drop for Shared {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A handle to a live connection; cheap to clone.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

/// Milliseconds since the first call: a cheap, monotonic timestamp for
/// `last_used`.
fn since_start() -> u64 {
    millis_at(std::time::Instant::now())
}

/// `since_start` at `now`.
fn millis_at(now: std::time::Instant) -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    now.saturating_duration_since(*START.get_or_init(std::time::Instant::now))
        .as_millis() as u64
}

impl Connection {
    /// Connect, handshake TLS (verifying the node's certificate) and log in.
    /// The password is only sent once the certificate has verified.
    pub async fn open(target: &Target, settings: &Settings) -> Result<Connection, UpstreamError> {
        let node = target.name.clone();
        let tcp = tokio::time::timeout(settings.connect_timeout, TcpStream::connect(&target.addr))
            .await
            .map_err(|_| UpstreamError::Timeout {
                node: node.clone(),
                timeout: settings.connect_timeout,
            })?
            .map_err(|e| UpstreamError::Connect {
                node: node.clone(),
                reason: e.to_string(),
                refused: e.kind() == std::io::ErrorKind::ConnectionRefused,
            })?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(
            settings.connect_timeout,
            settings.tls.connect(target.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| UpstreamError::Timeout {
            node: node.clone(),
            timeout: settings.connect_timeout,
        })?
        .map_err(|e| UpstreamError::Tls {
            node: node.clone(),
            reason: tls_reason(&e),
        })?;
        let mut stream = tls;
        let (user, pass) = (&settings.username, &settings.password);
        let login = async {
            match settings.protocol.login_form() {
                Some(form) => ascii_login(&mut stream, &node, form, user, pass).await,
                None => sasl_login(&mut stream, &node, user, pass).await,
            }
        };
        tokio::time::timeout(settings.connect_timeout, login)
            .await
            .map_err(|_| UpstreamError::Timeout {
                node: node.clone(),
                timeout: settings.connect_timeout,
            })??;
        let conn = Connection::spawn(stream, node, settings.protocol);
        conn.keep_alive(settings.keepalive, settings.request_timeout);
        Ok(conn)
    }

    /// While the connection is idle, ping it every `every`; a ping that is
    /// not answered within `timeout` closes it, so the pool replaces it
    /// before a client request can fail on it. The pinger holds no strong
    /// handle: the connection still ends when its last user lets go.
    fn keep_alive(&self, every: Duration, timeout: Duration) {
        if every.is_zero() {
            return;
        }
        let handle = Arc::downgrade(&self.shared);
        let every_ms = every.as_millis() as u64;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = handle.upgrade() else {
                    return;
                };
                let conn = Connection { shared };
                if !conn.is_alive() {
                    return;
                }
                let idle =
                    since_start().saturating_sub(conn.shared.last_used.load(Ordering::Relaxed));
                if idle < every_ms || conn.load() > 0 {
                    continue;
                }
                let Ok(reply) =
                    conn.send(Command::Noop, internal_frame(), std::time::Instant::now())
                else {
                    return;
                };
                let alive = Arc::clone(&conn.shared.alive);
                drop(conn);
                if !matches!(tokio::time::timeout(timeout, reply).await, Ok(Ok(Ok(_)))) {
                    if alive.load(Ordering::Relaxed) {
                        tracing::debug!(
                            "idle upstream connection did not answer a ping; closing it"
                        );
                    }
                    if let Some(shared) = handle.upgrade() {
                        Connection { shared }.close();
                    }
                    return;
                }
            }
        });
    }

    /// Run the reader and writer tasks over an established, logged-in stream
    /// that speaks `protocol`.
    pub fn spawn<S>(stream: S, node: String, protocol: UpstreamProtocol) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let alive = Arc::new(AtomicBool::new(true));
        let inflight = Arc::new(Mutex::new(VecDeque::<InFlight>::new()));
        let (rd, wr) = tokio::io::split(stream);
        let outbox = Arc::new(Mutex::new(Outbox::new(Box::pin(wr))));
        let work = Arc::new(Notify::new());
        let failed = Arc::new(Notify::new());
        let meta = protocol != UpstreamProtocol::Binary;
        let w = tokio::spawn(writer(
            Arc::clone(&outbox),
            Arc::clone(&inflight),
            Arc::clone(&work),
            Arc::clone(&alive),
            Arc::clone(&failed),
        ));
        let r = tokio::spawn(reader(
            rd,
            Arc::clone(&inflight),
            Arc::clone(&alive),
            failed,
            node,
            meta,
        ));
        Connection {
            shared: Arc::new(Shared {
                outbox,
                inflight,
                work,
                alive,
                load: Arc::new(AtomicUsize::new(0)),
                last_used: AtomicU64::new(since_start()),
                meta,
                tasks: [w.abort_handle(), r.abort_handle()],
            }),
        }
    }

    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Relaxed)
    }

    /// Requests queued or in flight on this connection.
    pub fn load(&self) -> usize {
        self.shared.load.load(Ordering::Relaxed)
    }

    /// Send one command, as a client framed by `frame` sent it at `now`; the
    /// returned receiver completes with its reply. Timeouts are the caller's
    /// job.
    ///
    /// The caller writes its own request when the connection's outbox is idle
    /// (flat combining: no task hand-off on the way out); otherwise it
    /// appends to what the writer task is already sending.
    pub fn send(
        &self,
        command: Command,
        frame: Frame,
        now: std::time::Instant,
    ) -> Result<PendingReply, UpstreamError> {
        let shared = &*self.shared;
        let (tx, rx) = oneshot::channel();
        let idle = shared.load.fetch_add(1, Ordering::Relaxed) == 0;
        let reply = Reply {
            tx: Some(tx),
            load: Arc::clone(&shared.load),
        };
        shared.last_used.store(millis_at(now), Ordering::Relaxed);
        let Ok(mut out) = shared.outbox.lock() else {
            return Err(lost_error());
        };
        if !shared.alive.load(Ordering::Relaxed) {
            return Err(lost_error());
        }
        let opaque = out.opaque.wrapping_add(1);
        let start = out.buffer().len();
        let encoded = if shared.meta {
            meta::client::encode_request(&command, &frame, opaque, out.buffer()).map_err(|e| e.0)
        } else {
            encode_binary(&command, &frame, opaque, out.buffer())
        };
        let expect = match encoded {
            Ok(expect) => expect,
            Err(what) => {
                out.truncate(start);
                return Err(UpstreamError::Unsupported(what));
            }
        };
        out.opaque = opaque;
        let done = out.push(start);
        let large = done.is_some();
        match shared.inflight.lock() {
            Ok(mut q) => q.push_back(InFlight {
                opaque,
                expect,
                command,
                reply,
                stats: Vec::new(),
                done,
            }),
            Err(_) => return Err(lost_error()),
        }
        if out.busy {
            return Ok(rx);
        }
        // On an idle connection, write it now: nothing else is coming to share
        // the write with. With others in flight (many clients, or one that
        // pipelines), the writer task gathers what arrives together into one
        // write. A large request always goes to the writer task, which must
        // wait for its reply before anything follows it.
        let driven = match idle && !large {
            true => out.drive(&mut Context::from_waker(Waker::noop())),
            false => Poll::Pending,
        };
        match driven {
            Poll::Ready(Ok(Driven::Empty)) => {}
            Poll::Ready(Ok(Driven::Hold)) | Poll::Pending => {
                out.busy = true;
                drop(out);
                shared.work.notify_one();
            }
            Poll::Ready(Err(error)) => {
                drop(out);
                tracing::debug!(%error, "upstream write failed");
                self.close();
            }
        }
        Ok(rx)
    }

    /// Stop using this connection (after a timeout, say): its tasks end and
    /// every request still in flight fails.
    pub fn close(&self) {
        self.shared.alive.store(false, Ordering::Relaxed);
        for task in &self.shared.tasks {
            task.abort();
        }
        fail_all(&self.shared.inflight, lost_error());
    }
}

fn tls_reason(error: &std::io::Error) -> String {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(why)) => format!("certificate refused: {why:?}"),
        Some(other) => other.to_string(),
        None => error.to_string(),
    }
}

/// The frame of a request the proxy makes itself (keepalive pings, the
/// unlink after a refused over-size set): the plainest reply will do.
pub fn internal_frame() -> Frame {
    Frame::Text(TextFrame::default())
}

/// The largest value a node's reply may announce: what a binary reply may
/// carry, so that both protocols accept the same items.
fn upstream_limits() -> Limits {
    Limits {
        max_item_size: binary::MAX_RESPONSE_BODY,
    }
}

/// Take over the outbox whenever a session hands it on (a write that could
/// not finish at once, or a large request to hold behind), and drive it with
/// this task's waker until it is empty.
async fn writer(
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

/// Encode a request for a binary-only node, refusing what binary cannot
/// carry with the name of the flag, so that the client learns what to drop
/// (or that the node should be reached over meta). The returned `Expect` is
/// unused: binary replies carry their own shape.
fn encode_binary(
    command: &Command,
    frame: &Frame,
    opaque: u32,
    out: &mut BytesMut,
) -> Result<Expect, &'static str> {
    if let Some(flag) = binary_cannot_carry(command, frame) {
        return Err(flag);
    }
    binary::encode_request(command, false, opaque, out)
        .map(|_| Expect::Meta(None))
        .map_err(|binary::Unsupported(what)| what)
}

/// The first meta flag of this request that binary has no field for.
fn binary_cannot_carry(command: &Command, frame: &Frame) -> Option<&'static str> {
    let named = match command {
        Command::Get(get) if get.vivify.is_some() => Some("meta flag N (vivify)"),
        Command::Get(get) if get.recache_below.is_some() => Some("meta flag R (recache)"),
        Command::Get(get) if get.no_bump => Some("meta flag u (no LRU bump)"),
        Command::Store(store) if store.invalidate => Some("meta flag I (invalidate)"),
        Command::Store(store) if store.vivify.is_some() => Some("meta flag N (vivify)"),
        Command::Delete(delete) if delete.invalidate => Some("meta flag I (invalidate)"),
        Command::Delete(delete) if delete.exptime.is_some() => Some("meta flag T on md"),
        Command::Arith(arith) if arith.touch.is_some() => Some("meta flag T on ma"),
        Command::MetaDebug { .. } => Some("me (meta debug)"),
        _ => None,
    };
    let Frame::Meta(meta) = frame else {
        return named;
    };
    let MetaFrame {
        return_hit,
        return_last_access,
        return_ttl,
        ..
    } = **meta;
    let asks_item = matches!(command, Command::Get(_) | Command::Arith(_));
    named.or(match () {
        () if return_hit && asks_item => Some("meta flag h (hit before)"),
        () if return_last_access && asks_item => Some("meta flag l (last access)"),
        () if return_ttl && asks_item => Some("meta flag t (remaining TTL)"),
        () => None,
    })
}

fn lost_error() -> UpstreamError {
    UpstreamError::Io {
        node: String::new(),
        reason: "connection closed".into(),
    }
}

fn fail_all(inflight: &Mutex<VecDeque<InFlight>>, error: UpstreamError) {
    if let Ok(mut q) = inflight.lock() {
        for req in q.drain(..) {
            if let Some(done) = &req.done {
                done.notify_one();
            }
            req.reply.send(Err(error.clone()));
        }
    }
}

async fn reader<R>(
    mut rd: R,
    inflight: Arc<Mutex<VecDeque<InFlight>>>,
    alive: Arc<AtomicBool>,
    failed: Arc<Notify>,
    node: String,
    meta: bool,
) where
    R: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let error = loop {
        if !alive.load(Ordering::Relaxed) {
            break lost_error();
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                break UpstreamError::Io {
                    node: node.clone(),
                    reason: "closed by node".into(),
                }
            }
            Ok(_) => {}
            Err(e) => {
                break UpstreamError::Io {
                    node: node.clone(),
                    reason: e.to_string(),
                }
            }
        }
        let drained = if meta {
            drain_meta_replies(&mut buf, &inflight, &node)
        } else {
            drain_replies(&mut buf, &inflight, &node)
        };
        if let Err(e) = drained {
            break e;
        }
        if buf.is_empty() && buf.capacity() > 256 * 1024 {
            buf = BytesMut::with_capacity(16 * 1024);
        }
    };
    alive.store(false, Ordering::Relaxed);
    failed.notify_one();
    fail_all(&inflight, error);
}

/// Complete every request whose whole meta reply is buffered. Replies come
/// in request order; a reply that does not parse, echoes another request's
/// opaque or does not fit its command drops the connection.
fn drain_meta_replies(
    buf: &mut BytesMut,
    inflight: &Mutex<VecDeque<InFlight>>,
    node: &str,
) -> Result<(), UpstreamError> {
    use bytes::Buf;
    let corrupt = |why: meta::client::ReplyError| {
        tracing::debug!(node, %why, "upstream meta reply refused; dropping the connection");
        UpstreamError::Protocol {
            node: node.to_string(),
        }
    };
    let limits = upstream_limits();
    loop {
        let mut q = inflight
            .lock()
            .map_err(|_| corrupt(meta::client::ReplyError::Unexpected))?;
        let Some(front) = q.front() else {
            return match buf.is_empty() {
                true => Ok(()),
                false => Err(corrupt(meta::client::ReplyError::Unexpected)),
            };
        };
        let Some((reply, used)) =
            meta::client::parse_reply(buf, front.expect, &limits).map_err(corrupt)?
        else {
            return Ok(());
        };
        buf.advance(used);
        let Some(req) = q.pop_front() else {
            return Err(corrupt(meta::client::ReplyError::Unexpected));
        };
        drop(q);
        if let Some(done) = &req.done {
            done.notify_one();
        }
        match meta::client::decode(req.command, reply) {
            Ok(response) => req.reply.send(Ok(response)),
            Err(why) => {
                let error = corrupt(why);
                req.reply.send(Err(error.clone()));
                return Err(error);
            }
        }
    }
}

/// Complete every request whose whole binary reply is buffered.
fn drain_replies(
    buf: &mut BytesMut,
    inflight: &Mutex<VecDeque<InFlight>>,
    node: &str,
) -> Result<(), UpstreamError> {
    use bytes::Buf;
    let corrupt = || UpstreamError::Protocol {
        node: node.to_string(),
    };
    while let Some((packet, used)) = binary::parse_response(buf).map_err(|_| corrupt())? {
        buf.advance(used);
        let mut q = inflight.lock().map_err(|_| corrupt())?;
        let Some(front) = q.front_mut() else {
            return Err(corrupt());
        };
        if front.opaque != packet.opaque {
            return Err(corrupt());
        }
        if let Command::Stats { .. } = front.command {
            if packet.status == binary::status::NO_ERROR && !packet.key.is_empty() {
                front.stats.push((
                    String::from_utf8_lossy(&packet.key).into_owned(),
                    String::from_utf8_lossy(&packet.value).into_owned(),
                ));
                continue;
            }
        }
        let Some(req) = q.pop_front() else {
            return Err(corrupt());
        };
        drop(q);
        let response = match req.command {
            Command::Stats { .. } if packet.status == binary::status::NO_ERROR => {
                Response::Stats(req.stats)
            }
            ref command => binary::decode_response(command, &packet),
        };
        if let Some(done) = &req.done {
            done.notify_one();
        }
        req.reply.send(Ok(response));
    }
    Ok(())
}

mod login;
mod outbox;

use login::{ascii_login, sasl_login};
use outbox::{Driven, Outbox};
#[cfg(test)]
mod tests;
