//! One connection: open (TCP, TLS, login), keepalive, send, close.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

use super::codec::Codec;
use super::detect;
use super::error::lost_error;
use super::inflight::{fail_all, reply_shape, InFlight, NoReply, PendingReply, ReplySlot};
use super::login::{ascii_login, ascii_login_auto, sasl_login, sasl_login_auto, Failed};
use super::outbox::{Driven, Outbox};
use super::reader::reader;
use super::writer::writer;
use super::{internal_frame, Settings, Target, UpstreamError, UpstreamProtocol};
use crate::protocol::{Command, Frame};

/// What every handle to one connection shares. When the last handle goes
/// (the pool replaced it and no request is in flight on it), its tasks end.
struct ConnectionState {
    outbox: Arc<Mutex<Outbox>>,
    inflight: Arc<Mutex<VecDeque<InFlight>>>,
    /// Hands the outbox to the writer task.
    work: Arc<Notify>,
    alive: Arc<AtomicBool>,
    /// Requests queued or in flight, for the pool's choice of connection.
    load: Arc<AtomicUsize>,
    /// When a request was last queued, in milliseconds of `since_start`.
    last_used: AtomicU64,
    codec: Codec,
    /// The node is a memgate node, which keeps tombstones (`node::tombstones`).
    tombstones: bool,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Drop for ConnectionState {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A handle to a live connection; cheap to clone.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<ConnectionState>,
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
    /// The password is only sent once the certificate has verified. Under
    /// `--upstream-protocol auto` the login finds the node's dialect, which
    /// may take a second connect ([`super::detect`]).
    pub async fn open(target: &Target, settings: &Settings) -> Result<Connection, UpstreamError> {
        let (stream, protocol) = match settings.protocol {
            UpstreamProtocol::Auto => open_auto(target, settings).await?,
            fixed => {
                let mut stream = handshake(target, settings).await?;
                let (user, pass) = (&settings.username, &settings.password);
                let node = target.name.as_str();
                let login = async {
                    match fixed.login_form() {
                        Some(form) => ascii_login(&mut stream, node, form, user, pass).await,
                        None => sasl_login(&mut stream, node, user, pass).await,
                    }
                };
                within(settings, node, login).await??;
                (stream, fixed)
            }
        };
        let conn = Connection::spawn(stream, target.name.clone(), protocol);
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
                    conn.send(Command::Noop, &internal_frame(), std::time::Instant::now())
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
        let codec = Codec::of(protocol);
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
            codec,
        ));
        Connection {
            shared: Arc::new(ConnectionState {
                outbox,
                inflight,
                work,
                alive,
                load: Arc::new(AtomicUsize::new(0)),
                last_used: AtomicU64::new(since_start()),
                codec,
                tombstones: protocol == UpstreamProtocol::Meta,
                tasks: [w.abort_handle(), r.abort_handle()],
            }),
        }
    }

    /// Whether the node at the other end keeps memgate's tombstones, so
    /// that the warm-up may copy moved items to it (`proxy::session::moved`).
    pub fn keeps_tombstones(&self) -> bool {
        self.shared.tombstones
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
        frame: &Frame,
        now: std::time::Instant,
    ) -> Result<PendingReply, NoReply> {
        self.send_as(None, command, frame, now)
    }

    /// `send` of a command the caller keeps (a replicated write, whose
    /// value goes on to the other replicas): what stays in flight is only
    /// what decoding its reply takes (`reply_shape`), which is also what a
    /// failure hands back. A copy of the whole command cost an allocation
    /// for its value and one for its key (bytes' promotion to shared),
    /// and as much again to free them.
    pub fn send_kept(
        &self,
        command: &Command,
        frame: &Frame,
        now: std::time::Instant,
    ) -> Result<PendingReply, NoReply> {
        self.send_as(Some(command), reply_shape(command), frame, now)
    }

    /// Send `encoded`, or `kept` if there is none, and keep `kept` in
    /// flight.
    fn send_as(
        &self,
        encoded: Option<&Command>,
        command: Command,
        frame: &Frame,
        now: std::time::Instant,
    ) -> Result<PendingReply, NoReply> {
        let shared = &*self.shared;
        let (tx, rx) = oneshot::channel();
        let idle = shared.load.fetch_add(1, Ordering::Relaxed) == 0;
        let reply = ReplySlot {
            tx: Some(tx),
            load: Arc::clone(&shared.load),
        };
        shared.last_used.store(millis_at(now), Ordering::Relaxed);
        let Ok(mut out) = shared.outbox.lock() else {
            return Err(NoReply::returning(lost_error(), command));
        };
        if !shared.alive.load(Ordering::Relaxed) {
            return Err(NoReply::returning(lost_error(), command));
        }
        let opaque = out.opaque.wrapping_add(1);
        let start = out.buffer().len();
        let encoded = encoded.unwrap_or(&command);
        let expect = match shared.codec.encode(encoded, frame, opaque, out.buffer()) {
            Ok(expect) => expect,
            Err(what) => {
                out.truncate(start);
                return Err(NoReply::returning(what, command));
            }
        };
        out.opaque = opaque;
        let done = out.push(start);
        let large = done.is_some();
        let Ok(mut q) = shared.inflight.lock() else {
            return Err(NoReply::returning(lost_error(), command));
        };
        q.push_back(InFlight {
            opaque,
            expect,
            command,
            reply,
            stats: Vec::new(),
            done,
        });
        drop(q);
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

/// A node's TLS stream before login.
type Stream = tokio_rustls::client::TlsStream<TcpStream>;

/// `fut`, failing with a timeout after the connect timeout.
async fn within<T>(
    settings: &Settings,
    node: &str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, UpstreamError> {
    tokio::time::timeout(settings.connect_timeout, fut)
        .await
        .map_err(|_| UpstreamError::Timeout {
            node: node.to_string(),
            timeout: settings.connect_timeout,
        })
}

/// TCP connect and TLS handshake, each within the connect timeout.
async fn handshake(target: &Target, settings: &Settings) -> Result<Stream, UpstreamError> {
    let node = target.name.as_str();
    let tcp = within(settings, node, TcpStream::connect(&target.addr))
        .await?
        .map_err(|e| UpstreamError::Connect {
            node: node.to_string(),
            reason: e.to_string(),
            refused: e.kind() == std::io::ErrorKind::ConnectionRefused,
        })?;
    let _ = tcp.set_nodelay(true);
    within(
        settings,
        node,
        settings.tls.connect(target.server_name.clone(), tcp),
    )
    .await?
    .map_err(|e| UpstreamError::Tls {
        node: node.to_string(),
        reason: tls_reason(&e),
    })
}

/// A logged-in stream to a node whose dialect is found at login: the text
/// login first, unless the node spoke binary last time; if the node
/// answers in the other dialect, a new connection tries that one.
async fn open_auto(
    target: &Target,
    settings: &Settings,
) -> Result<(Stream, UpstreamProtocol), UpstreamError> {
    let binary_first = detect::remembered(target) == Some(UpstreamProtocol::Binary);
    let first = match binary_first {
        true => login_auto(target, settings, UpstreamProtocol::Binary).await?,
        false => login_auto(target, settings, UpstreamProtocol::Meta).await?,
    };
    let (stream, protocol) = match first {
        Ok(found) => found,
        Err(_) => {
            let other = match binary_first {
                true => UpstreamProtocol::Meta,
                false => UpstreamProtocol::Binary,
            };
            // The second answer decides: a node that speaks neither is an
            // error with its own message.
            login_auto(target, settings, other)
                .await?
                .map_err(UpstreamError::from)?
        }
    };
    detect::found(target, protocol);
    Ok((stream, protocol))
}

/// One connection of [`open_auto`], logged in with the text login
/// (`Meta`, which finds meta or meta-memcached) or the binary one: the
/// stream and its dialect; `Ok(Err(..))` when the node answered in the
/// other dialect, `Err(..)` for any other failure.
async fn login_auto(
    target: &Target,
    settings: &Settings,
    dialect: UpstreamProtocol,
) -> Result<Result<(Stream, UpstreamProtocol), Failed>, UpstreamError> {
    let mut stream = handshake(target, settings).await?;
    let (user, pass) = (&settings.username, &settings.password);
    let node = target.name.as_str();
    let login = async {
        match dialect {
            UpstreamProtocol::Binary => sasl_login_auto(&mut stream, node, user, pass)
                .await
                .map(|()| UpstreamProtocol::Binary),
            _ => ascii_login_auto(&mut stream, node, user, pass).await,
        }
    };
    match within(settings, node, login).await? {
        Ok(protocol) => Ok(Ok((stream, protocol))),
        Err(Failed::Other(error)) => Err(error),
        Err(wrong) => Ok(Err(wrong)),
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
