//! `memgate bench`: a load generator in the style of memtier_benchmark.
//!
//! - [`BenchConfig`] says what to run; [`run`] runs it and returns a
//!   [`Report`] (human text via `Display`, one JSON object via
//!   [`Report::to_json`]).
//! - Each connection is a tokio task. A writer keeps up to `pipeline`
//!   requests in flight (a semaphore is the window) and a reader matches the
//!   replies in order, recording latency in an HDR histogram.
//! - Closed loop by default: latency runs from the moment a request is
//!   written. With `rate`, every request has an intended send time from a
//!   fixed [`schedule::Schedule`] and latency runs from that time, so a slow
//!   server cannot hide its stalls by slowing the benchmark down
//!   (coordinated omission).
//! - Counts add up: `ops = hits + misses + sets + errors`, where errors are
//!   error replies, replies that fail `verify`, timeouts, and requests lost
//!   with a broken connection.
//! - With `prefill`, every key is set once before the measurement starts.

pub mod conn;
pub mod keys;
pub mod schedule;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use conn::{Codec, Conn, Op, Reply};
use keys::{KeyChooser, KeyPattern, Rng, Values};
use schedule::Schedule;

/// Which dialect to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Text,
    Binary,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Text => "text",
            Protocol::Binary => "binary",
        }
    }
}

/// Credentials: SASL PLAIN over binary, MemCachier's ASCII auth over text.
#[derive(Clone)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// TLS to the server, verified against a private CA.
#[derive(Clone, Debug)]
pub struct TlsTarget {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: rustls_pki_types::ServerName<'static>,
}

/// When the measurement ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    After(Duration),
    /// This many requests in total, shared between the connections.
    Requests(u64),
}

/// Everything a run needs. [`BenchConfig::new`] gives memtier-like defaults.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// host:port.
    pub server: String,
    pub protocol: Protocol,
    pub login: Option<Login>,
    pub tls: Option<TlsTarget>,
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// SET:GET, e.g. (1, 10).
    pub ratio: (u32, u32),
    pub key_space: u64,
    pub key_pattern: KeyPattern,
    /// Value sizes, inclusive; each key's size is fixed.
    pub value_size: (usize, usize),
    pub stop: Stop,
    /// Offered load in ops/s over all connections; `None` is closed loop.
    pub rate: Option<f64>,
    /// A reply later than this counts as an error and the connection is reopened.
    pub timeout: Duration,
    pub prefill: bool,
    /// Check that every hit carries the key's deterministic value.
    pub verify: bool,
    /// Print a progress line on stderr once a second.
    pub progress: bool,
}

/// Connections beyond this cost more memory (a histogram each) than they are worth.
pub const MAX_CONNECTIONS: usize = 1000;
/// Longest pipeline accepted.
pub const MAX_PIPELINE: usize = 10_000;
/// Largest value: the item limit minus room for the key.
pub const MAX_VALUE_SIZE: usize = (1 << 20) - 64;

impl BenchConfig {
    pub fn new(server: impl Into<String>) -> BenchConfig {
        BenchConfig {
            server: server.into(),
            protocol: Protocol::Text,
            login: None,
            tls: None,
            connections: 4,
            pipeline: 1,
            ratio: (1, 10),
            key_space: 10_000,
            key_pattern: KeyPattern::Uniform,
            value_size: (32, 32),
            stop: Stop::After(Duration::from_secs(10)),
            rate: None,
            timeout: Duration::from_secs(1),
            prefill: false,
            verify: false,
            progress: false,
        }
    }

    /// The checks the command line also makes, for library callers.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |what: &str| Err(BenchError::Config(what.to_string()));
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return bad("connections must be 1 to 1000");
        }
        if self.pipeline == 0 || self.pipeline > MAX_PIPELINE {
            return bad("pipeline must be 1 to 10000");
        }
        if self.ratio.0 == 0 && self.ratio.1 == 0 {
            return bad("ratio must not be 0:0");
        }
        if self.key_space == 0 {
            return bad("key space must be at least 1");
        }
        if self.value_size.0 > self.value_size.1 || self.value_size.1 > MAX_VALUE_SIZE {
            return bad("value size must be MIN-MAX with MIN <= MAX <= 1MiB - 64");
        }
        if let KeyPattern::Zipf { exponent } = self.key_pattern {
            if !(exponent.is_finite() && exponent > 0.0) {
                return bad("zipf exponent must be positive");
            }
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return bad("rate must be a positive number of ops/s");
            }
        }
        match self.stop {
            Stop::After(d) if d.is_zero() => return bad("duration must be positive"),
            Stop::Requests(0) => return bad("requests must be at least 1"),
            _ => {}
        }
        if self.timeout.is_zero() {
            return bad("timeout must be positive");
        }
        if let Some(login) = &self.login {
            if login.username.is_empty()
                || login.username.len() > crate::protocol::MAX_KEY_LEN
                || login
                    .username
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return bad("username must be 1 to 250 characters without spaces");
            }
        }
        Ok(())
    }
}

/// Why a run could not be made; failures during the run are counted instead.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid benchmark configuration: {0}")]
    Config(String),
    #[error("connect to {server}: {reason}")]
    Connect { server: String, reason: String },
    #[error("TLS with the server: {0}")]
    Tls(String),
    #[error("login: {0}")]
    Login(String),
    #[error("internal: {0}")]
    Internal(String),
}

/// Shared by every connection task of a run.
struct Ctx {
    config: BenchConfig,
    values: Values,
    codec: Codec,
}

/// Counters the progress line reads while the run goes on.
#[derive(Default)]
struct Live {
    ops: AtomicU64,
    errors: AtomicU64,
    latency_us: AtomicU64,
}

/// Latency is recorded in microseconds, up to 100 s, to 3 significant digits.
const HISTOGRAM_MAX_US: u64 = 100_000_000;

fn new_histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3)
        .map_err(|e| BenchError::Internal(format!("histogram: {e}")))
}

/// One connection's (or the run's) counts.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Requests handed to a connection; each ends up in exactly one of
    /// hits, misses, sets or errors, so this equals [`Stats::ops`].
    pub sent: u64,
    pub hits: u64,
    pub misses: u64,
    pub sets: u64,
    /// Every request that did not succeed; includes the three below.
    pub errors: u64,
    pub timeouts: u64,
    pub verify_failures: u64,
    /// Requests lost with a connection that broke.
    pub lost: u64,
    pub reconnects: u64,
    pub connect_failures: u64,
    pub latency: Histogram<u64>,
}

impl Stats {
    fn new() -> Result<Stats, BenchError> {
        Ok(Stats {
            sent: 0,
            hits: 0,
            misses: 0,
            sets: 0,
            errors: 0,
            timeouts: 0,
            verify_failures: 0,
            lost: 0,
            reconnects: 0,
            connect_failures: 0,
            latency: new_histogram()?,
        })
    }

    pub fn ops(&self) -> u64 {
        self.hits + self.misses + self.sets + self.errors
    }

    fn merge(&mut self, other: &Stats) {
        self.sent += other.sent;
        self.hits += other.hits;
        self.misses += other.misses;
        self.sets += other.sets;
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.verify_failures += other.verify_failures;
        self.lost += other.lost;
        self.reconnects += other.reconnects;
        self.connect_failures += other.connect_failures;
        // Same bounds on both sides, so this cannot fail.
        let _ = self.latency.add(&other.latency);
    }

    fn reply(&mut self, ctx: &Ctx, live: &Live, request: &InFlight, reply: Reply, now: Instant) {
        let latency = now.saturating_duration_since(request.start);
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency.saturating_record(us);
        match reply {
            Reply::Hit(data) => {
                if ctx.config.verify && data != ctx.values.get(request.key) {
                    self.verify_failures += 1;
                    self.errors += 1;
                    live.errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.hits += 1;
                }
            }
            Reply::Miss => self.misses += 1,
            Reply::Stored => self.sets += 1,
            Reply::Error(_) => {
                self.errors += 1;
                live.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        live.ops.fetch_add(1, Ordering::Relaxed);
        live.latency_us.fetch_add(us, Ordering::Relaxed);
    }

    fn failed(&mut self, live: &Live, timeout: bool) {
        self.errors += 1;
        if timeout {
            self.timeouts += 1;
        } else {
            self.lost += 1;
        }
        live.ops.fetch_add(1, Ordering::Relaxed);
        live.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one connection does next.
#[derive(Clone, Debug)]
struct Plan {
    kind: PlanKind,
    /// Requests handed out.
    taken: u64,
    remaining: Option<u64>,
    deadline: Option<Instant>,
    schedule: Option<Schedule>,
}

#[derive(Clone, Debug)]
enum PlanKind {
    /// Set keys `next..end` in order.
    Prefill { next: u64, end: u64 },
    /// The measured mix.
    Mix {
        keys: KeyChooser,
        rng: Rng,
        sets: u64,
        cycle: u64,
        counter: u64,
    },
}

enum Wait {
    Now,
    Until(Instant),
    Done,
}

struct Item {
    op: Op,
    key: u64,
    intended: Option<Instant>,
}

impl Plan {
    fn prefill(key_space: u64, connections: usize, index: usize) -> Plan {
        let n = connections as u64;
        let i = index as u64;
        let share = |i: u64| (u128::from(key_space) * u128::from(i) / u128::from(n)) as u64;
        Plan {
            kind: PlanKind::Prefill {
                next: share(i),
                end: share(i + 1),
            },
            taken: 0,
            remaining: None,
            deadline: None,
            schedule: None,
        }
    }

    fn mix(config: &BenchConfig, index: usize, start: Instant) -> Plan {
        let n = config.connections as u64;
        let i = index as u64;
        let (remaining, deadline) = match config.stop {
            Stop::After(d) => (None, Some(start + d)),
            Stop::Requests(total) => (Some(total / n + u64::from(i < total % n)), None),
        };
        Plan {
            kind: PlanKind::Mix {
                keys: KeyChooser::new(config.key_pattern, config.key_space),
                rng: Rng::new(keys::mix(0x0062_656e_6368 ^ i)),
                sets: u64::from(config.ratio.0),
                cycle: u64::from(config.ratio.0) + u64::from(config.ratio.1),
                counter: 0,
            },
            taken: 0,
            remaining,
            deadline,
            schedule: config
                .rate
                .map(|rate| Schedule::for_connection(start, rate, config.connections, index)),
        }
    }

    fn wait(&self, now: Instant) -> Wait {
        if self.remaining == Some(0) {
            return Wait::Done;
        }
        if let PlanKind::Prefill { next, end } = self.kind {
            if next >= end {
                return Wait::Done;
            }
        }
        // With a rate the deadline applies to intended times: a request
        // meant to go out before it is sent even if the sender is late, or
        // its latency would be silently omitted.
        if self.schedule.is_none() && self.deadline.is_some_and(|d| now >= d) {
            return Wait::Done;
        }
        match &self.schedule {
            Some(s) => {
                let at = s.next_intended();
                if self.deadline.is_some_and(|d| at >= d) {
                    Wait::Done
                } else if at > now + LOOKAHEAD {
                    Wait::Until(at)
                } else {
                    Wait::Now
                }
            }
            None => Wait::Now,
        }
    }

    fn finished(&self, now: Instant) -> bool {
        matches!(self.wait(now), Wait::Done)
    }

    /// The next request, if one is due by `now`.
    fn take(&mut self, now: Instant) -> Option<Item> {
        if !matches!(self.wait(now), Wait::Now) {
            return None;
        }
        let intended = match &mut self.schedule {
            Some(s) => Some(s.take_due(now + LOOKAHEAD)?),
            None => None,
        };
        if let Some(r) = &mut self.remaining {
            *r -= 1;
        }
        self.taken += 1;
        let (op, key) = match &mut self.kind {
            PlanKind::Prefill { next, .. } => {
                *next += 1;
                (Op::Set, *next - 1)
            }
            PlanKind::Mix {
                keys,
                rng,
                sets,
                cycle,
                counter,
            } => {
                let op = if *counter % *cycle < *sets {
                    Op::Set
                } else {
                    Op::Get
                };
                *counter += 1;
                (op, keys.next(rng))
            }
        };
        Some(Item { op, key, intended })
    }
}

/// tokio's timer fires on millisecond ticks, so sleeping until an intended
/// time sends up to a millisecond late, and with a rate that lateness would
/// be counted as server latency. Instead a request may go out up to this
/// much *early*; its latency then counts from the actual write, which is
/// exact. The schedule itself stays exact, so the offered load is unchanged,
/// and a request sent late still counts from its intended time.
const LOOKAHEAD: Duration = Duration::from_millis(1);

/// A request written and not yet answered. Holding it holds a window slot.
struct InFlight {
    op: Op,
    key: u64,
    opaque: u32,
    /// Latency counts from here: the intended time with a rate, else the write.
    start: Instant,
    /// When it was actually written; the timeout counts from here.
    sent: Instant,
    _slot: OwnedSemaphorePermit,
}

/// How many connect attempts a connection makes after it broke, in a row.
const RECONNECT_ATTEMPTS: u32 = 3;
const RECONNECT_DELAY: Duration = Duration::from_millis(100);
/// Bound on sessions per connection per phase.
const MAX_SESSIONS: u32 = 1000;
/// Requests batched into one write.
const BATCH_BYTES: usize = 64 * 1024;

/// Run `plan` on one connection, reconnecting if it breaks.
async fn drive(
    ctx: Arc<Ctx>,
    live: Arc<Live>,
    conn: Option<Conn>,
    mut plan: Plan,
    pipeline: usize,
) -> Result<(Option<Conn>, Stats), BenchError> {
    let mut stats = Stats::new()?;
    let conn = drive_sessions(&ctx, &live, conn, &mut plan, &mut stats, pipeline).await;
    stats.sent = plan.taken;
    Ok((conn, stats))
}

async fn drive_sessions(
    ctx: &Ctx,
    live: &Live,
    mut conn: Option<Conn>,
    plan: &mut Plan,
    stats: &mut Stats,
    pipeline: usize,
) -> Option<Conn> {
    for _ in 0..MAX_SESSIONS {
        let current = match conn.take() {
            Some(c) => c,
            None => {
                let mut opened = None;
                for _ in 0..RECONNECT_ATTEMPTS {
                    if plan.finished(Instant::now()) {
                        break;
                    }
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    match conn::connect(&ctx.config).await {
                        Ok(c) => {
                            stats.reconnects += 1;
                            opened = Some(c);
                            break;
                        }
                        Err(error) => {
                            stats.connect_failures += 1;
                            tracing::debug!(%error, "reconnect failed");
                        }
                    }
                }
                opened?
            }
        };
        match session(ctx, live, current, plan, stats, pipeline).await {
            Some(c) => return Some(c),
            None if plan.finished(Instant::now()) => return None,
            None => {}
        }
    }
    None
}

/// One connection until the plan is done (the connection comes back) or it
/// breaks (`None`; every request in flight is counted as an error).
async fn session(
    ctx: &Ctx,
    live: &Live,
    conn: Conn,
    plan: &mut Plan,
    stats: &mut Stats,
    pipeline: usize,
) -> Option<Conn> {
    let (reader_half, writer_half) = tokio::io::split(conn);
    let window = Arc::new(Semaphore::new(pipeline));
    let (tx, rx) = mpsc::unbounded_channel();
    let outcome = {
        let writer = write_loop(ctx, writer_half, plan, window, tx);
        let reader = read_loop(ctx, live, reader_half, rx, stats);
        tokio::pin!(writer, reader);
        tokio::select! {
            biased;
            written = &mut writer => {
                let (reader_half, rx, broken) = reader.await;
                match written {
                    Ok(writer_half) if !broken => Ok(reader_half.unsplit(writer_half)),
                    _ => Err(rx),
                }
            }
            // The reader stops early only when the connection broke. The
            // writer may be stuck on a full socket: it is dropped with this
            // block, which closes the queue.
            (_, rx, _) = &mut reader => Err(rx),
        }
    };
    match outcome {
        Ok(conn) => Some(conn),
        Err(mut rx) => {
            // Whatever was still in flight is lost with the connection.
            while rx.recv().await.is_some() {
                stats.failed(live, false);
            }
            None
        }
    }
}

async fn write_loop(
    ctx: &Ctx,
    mut out_half: WriteHalf<Conn>,
    plan: &mut Plan,
    window: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<InFlight>,
) -> Result<WriteHalf<Conn>, ()> {
    let mut out = BytesMut::with_capacity(BATCH_BYTES);
    let mut opaque: u32 = 0;
    loop {
        match plan.wait(Instant::now()) {
            Wait::Done => break,
            // Wake a little early (see LOOKAHEAD); never late by a timer tick.
            Wait::Until(at) => {
                tokio::time::sleep_until(at.checked_sub(LOOKAHEAD).unwrap_or(at).into()).await
            }
            Wait::Now => {}
        }
        let Ok(first) = Arc::clone(&window).acquire_owned().await else {
            break;
        };
        out.clear();
        let mut slot = Some(first);
        while let Some(permit) = slot.take() {
            let now = Instant::now();
            let Some(item) = plan.take(now) else {
                break;
            };
            opaque = opaque.wrapping_add(1);
            let value = (item.op == Op::Set).then(|| ctx.values.get(item.key));
            if let Err(error) =
                ctx.codec
                    .encode(item.op, keys::key(item.key), value, opaque, &mut out)
            {
                tracing::error!(%error, "cannot encode a request");
                return Err(());
            }
            let request = InFlight {
                op: item.op,
                key: item.key,
                opaque,
                // With a rate, from the intended time, or from the write if
                // that came first (see LOOKAHEAD): whichever is earlier.
                start: item.intended.map_or(now, |at| at.min(now)),
                sent: now,
                _slot: permit,
            };
            if tx.send(request).is_err() {
                return Err(());
            }
            if out.len() < BATCH_BYTES {
                slot = Arc::clone(&window).try_acquire_owned().ok();
            }
        }
        if !out.is_empty() {
            out_half.write_all(&out).await.map_err(|_| ())?;
            out_half.flush().await.map_err(|_| ())?;
        }
    }
    Ok(out_half)
}

/// Match replies to requests in order. Returns the read half, the queue and
/// whether the connection broke (a bad reply, a close or a timeout).
async fn read_loop(
    ctx: &Ctx,
    live: &Live,
    mut in_half: ReadHalf<Conn>,
    mut rx: mpsc::UnboundedReceiver<InFlight>,
    stats: &mut Stats,
) -> (ReadHalf<Conn>, mpsc::UnboundedReceiver<InFlight>, bool) {
    let mut buf = BytesMut::with_capacity(BATCH_BYTES);
    while let Some(request) = rx.recv().await {
        let deadline = tokio::time::Instant::from_std(request.sent + ctx.config.timeout);
        let got = tokio::time::timeout_at(
            deadline,
            read_reply(&ctx.codec, &mut in_half, &mut buf, &request),
        )
        .await;
        match got {
            Ok(Ok(reply)) => stats.reply(ctx, live, &request, reply, Instant::now()),
            Ok(Err(error)) => {
                tracing::debug!(%error, "connection broke");
                stats.failed(live, false);
                return (in_half, rx, true);
            }
            Err(_) => {
                stats.failed(live, true);
                return (in_half, rx, true);
            }
        }
    }
    (in_half, rx, false)
}

async fn read_reply(
    codec: &Codec,
    in_half: &mut ReadHalf<Conn>,
    buf: &mut BytesMut,
    request: &InFlight,
) -> Result<Reply, conn::WireError> {
    // Each turn either returns or reads at least one byte; the caller's
    // timeout bounds the whole.
    loop {
        if let Some((reply, used)) = codec.parse(request.op, request.opaque, buf)? {
            buf.advance(used);
            return Ok(reply);
        }
        match in_half.read_buf(buf).await {
            Ok(0) => return Err(conn::WireError("connection closed".into())),
            Ok(_) => {}
            Err(e) => return Err(conn::WireError(e.to_string())),
        }
    }
}

/// Run one phase on every connection; the connections that survive come back.
async fn phase(
    ctx: &Arc<Ctx>,
    live: &Arc<Live>,
    conns: Vec<Option<Conn>>,
    plans: Vec<Plan>,
    pipeline: usize,
) -> Result<(Vec<Option<Conn>>, Stats), BenchError> {
    let mut tasks = JoinSet::new();
    let count = conns.len();
    for (index, (conn, plan)) in conns.into_iter().zip(plans).enumerate() {
        let (ctx, live) = (Arc::clone(ctx), Arc::clone(live));
        tasks.spawn(async move { (index, drive(ctx, live, conn, plan, pipeline).await) });
    }
    let mut back: Vec<Option<Conn>> = (0..count).map(|_| None).collect();
    let mut total = Stats::new()?;
    while let Some(joined) = tasks.join_next().await {
        let (index, result) = joined.map_err(|e| BenchError::Internal(e.to_string()))?;
        let (conn, stats) = result?;
        total.merge(&stats);
        if let Some(slot) = back.get_mut(index) {
            *slot = conn;
        }
    }
    Ok((back, total))
}

/// Prefill uses at least this deep a pipeline: it is not measured.
const PREFILL_PIPELINE: usize = 32;

/// Run the benchmark.
pub async fn run(config: BenchConfig) -> Result<Report, BenchError> {
    config.validate()?;
    let ctx = Arc::new(Ctx {
        values: Values::new(config.value_size.0, config.value_size.1),
        codec: Codec::new(config.protocol),
        config,
    });
    let n = ctx.config.connections;

    let mut opening = JoinSet::new();
    for index in 0..n {
        let ctx = Arc::clone(&ctx);
        opening.spawn(async move { (index, conn::connect(&ctx.config).await) });
    }
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    while let Some(joined) = opening.join_next().await {
        let (index, result) = joined.map_err(|e| BenchError::Internal(e.to_string()))?;
        if let Some(slot) = conns.get_mut(index) {
            *slot = Some(result?);
        }
    }

    let prefill = if ctx.config.prefill {
        let started = Instant::now();
        let plans = (0..n)
            .map(|i| Plan::prefill(ctx.config.key_space, n, i))
            .collect();
        let pipeline = ctx.config.pipeline.max(PREFILL_PIPELINE);
        let (back, stats) = phase(&ctx, &Arc::new(Live::default()), conns, plans, pipeline).await?;
        conns = back;
        Some(PrefillReport {
            keys: ctx.config.key_space,
            sets: stats.sets,
            errors: stats.errors,
            elapsed: started.elapsed(),
        })
    } else {
        None
    };

    let live = Arc::new(Live::default());
    let start = Instant::now();
    let progress = ctx
        .config
        .progress
        .then(|| tokio::spawn(progress_lines(Arc::clone(&live), start)));
    let plans = (0..n).map(|i| Plan::mix(&ctx.config, i, start)).collect();
    let result = phase(&ctx, &live, conns, plans, ctx.config.pipeline).await;
    let elapsed = start.elapsed();
    if let Some(progress) = progress {
        progress.abort();
    }
    let (_, stats) = result?;
    Ok(Report::new(&ctx.config, stats, elapsed, prefill))
}

/// One line a second on stderr until aborted.
async fn progress_lines(live: Arc<Live>, start: Instant) {
    let second = Duration::from_secs(1);
    let mut tick = tokio::time::interval_at((start + second).into(), second);
    let (mut last_ops, mut last_latency) = (0u64, 0u64);
    for elapsed in 1u64.. {
        tick.tick().await;
        let ops = live.ops.load(Ordering::Relaxed);
        let errors = live.errors.load(Ordering::Relaxed);
        let latency = live.latency_us.load(Ordering::Relaxed);
        let (d_ops, d_latency) = (ops - last_ops, latency.saturating_sub(last_latency));
        let avg_ms = if d_ops == 0 {
            0.0
        } else {
            d_latency as f64 / d_ops as f64 / 1000.0
        };
        eprintln!(
            "[{elapsed:>4}s] {d_ops:>9} ops/s  {ops:>11} ops  {errors:>7} errors  avg {avg_ms:.3} ms"
        );
        (last_ops, last_latency) = (ops, latency);
    }
}

/// The prefill phase, which is not measured.
#[derive(Clone, Debug)]
pub struct PrefillReport {
    pub keys: u64,
    pub sets: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Report {
    pub server: String,
    pub protocol: Protocol,
    pub tls: bool,
    pub login: bool,
    pub connections: usize,
    pub pipeline: usize,
    pub ratio: (u32, u32),
    pub key_space: u64,
    pub key_pattern: KeyPattern,
    pub value_size: (usize, usize),
    pub rate: Option<f64>,
    pub elapsed: Duration,
    pub stats: Stats,
    pub latency: Latency,
    /// The latency distribution: (quantile, microseconds) at
    /// [`CURVE_QUANTILES`], for percentile plots.
    pub curve: Vec<(f64, u64)>,
    pub prefill: Option<PrefillReport>,
}

/// Where the latency distribution is sampled: the minimum, the body, a tail
/// dense enough for a percentile plot on a log scale, and the maximum.
pub const CURVE_QUANTILES: [f64; 19] = [
    0.0, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.997, 0.998, 0.999,
    0.9995, 0.9997, 0.9999, 1.0,
];

impl Report {
    fn new(
        config: &BenchConfig,
        stats: Stats,
        elapsed: Duration,
        prefill: Option<PrefillReport>,
    ) -> Report {
        let h = &stats.latency;
        let latency = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                mean: h.mean(),
                p50: h.value_at_quantile(0.50),
                p90: h.value_at_quantile(0.90),
                p99: h.value_at_quantile(0.99),
                p99_9: h.value_at_quantile(0.999),
                max: h.max(),
            }
        };
        let curve = if h.is_empty() {
            Vec::new()
        } else {
            CURVE_QUANTILES
                .iter()
                .map(|&q| (q, h.value_at_quantile(q)))
                .collect()
        };
        Report {
            server: config.server.clone(),
            protocol: config.protocol,
            tls: config.tls.is_some(),
            login: config.login.is_some(),
            connections: config.connections,
            pipeline: config.pipeline,
            ratio: config.ratio,
            key_space: config.key_space,
            key_pattern: config.key_pattern,
            value_size: config.value_size,
            rate: config.rate,
            elapsed,
            stats,
            latency,
            curve,
            prefill,
        }
    }

    pub fn ops(&self) -> u64 {
        self.stats.ops()
    }

    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops() as f64 / secs
        } else {
            0.0
        }
    }

    /// Hits over gets answered (0 when there were none).
    pub fn hit_ratio(&self) -> f64 {
        let gets = self.stats.hits + self.stats.misses;
        if gets == 0 {
            0.0
        } else {
            self.stats.hits as f64 / gets as f64
        }
    }

    fn pattern_name(&self) -> String {
        match self.key_pattern {
            KeyPattern::Uniform => "uniform".into(),
            KeyPattern::Zipf { exponent } => format!("zipf({exponent})"),
        }
    }

    /// One JSON object; latencies in microseconds.
    pub fn to_json(&self) -> serde_json::Value {
        let s = &self.stats;
        let l = &self.latency;
        serde_json::json!({
            "server": self.server,
            "protocol": self.protocol.name(),
            "tls": self.tls,
            "login": self.login,
            "connections": self.connections,
            "pipeline": self.pipeline,
            "ratio": format!("{}:{}", self.ratio.0, self.ratio.1),
            "key_space": self.key_space,
            "key_pattern": self.pattern_name(),
            "value_size": { "min": self.value_size.0, "max": self.value_size.1 },
            "rate": self.rate,
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "ops": self.ops(),
            "sent": s.sent,
            "ops_per_sec": self.ops_per_sec(),
            "hits": s.hits,
            "misses": s.misses,
            "sets": s.sets,
            "errors": s.errors,
            "timeouts": s.timeouts,
            "verify_failures": s.verify_failures,
            "lost": s.lost,
            "reconnects": s.reconnects,
            "connect_failures": s.connect_failures,
            "hit_ratio": self.hit_ratio(),
            "latency_us": {
                "mean": l.mean,
                "p50": l.p50,
                "p90": l.p90,
                "p99": l.p99,
                "p99_9": l.p99_9,
                "max": l.max,
            },
            "latency_curve_us": self
                .curve
                .iter()
                .map(|&(q, us)| serde_json::json!([q, us]))
                .collect::<Vec<_>>(),
            "latency_from": if self.rate.is_some() { "intended" } else { "sent" },
            "prefill": self.prefill.as_ref().map(|p| serde_json::json!({
                "keys": p.keys,
                "sets": p.sets,
                "errors": p.errors,
                "elapsed_seconds": p.elapsed.as_secs_f64(),
            })),
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        let l = &self.latency;
        let ms = |us: u64| us as f64 / 1000.0;
        let size = if self.value_size.0 == self.value_size.1 {
            format!("{} B", self.value_size.0)
        } else {
            format!("{}-{} B", self.value_size.0, self.value_size.1)
        };
        writeln!(
            f,
            "memgate bench: {} {}{}{}, {} connections x pipeline {}, SET:GET {}:{}, {} keys ({}), values {}",
            self.server,
            self.protocol.name(),
            if self.tls { " + TLS" } else { "" },
            if self.login { " + login" } else { "" },
            self.connections,
            self.pipeline,
            self.ratio.0,
            self.ratio.1,
            self.key_space,
            self.pattern_name(),
            size,
        )?;
        if let Some(p) = &self.prefill {
            writeln!(
                f,
                "prefill   {} keys in {:.2}s ({} errors)",
                p.keys,
                p.elapsed.as_secs_f64(),
                p.errors
            )?;
        }
        match self.rate {
            Some(rate) => writeln!(
                f,
                "rate      {rate} ops/s offered; latency counted from each request's intended send time"
            )?,
            None => writeln!(f, "rate      closed loop; latency counted from each send")?,
        }
        writeln!(
            f,
            "ops       {} in {:.2}s = {:.0} ops/s",
            self.ops(),
            self.elapsed.as_secs_f64(),
            self.ops_per_sec()
        )?;
        writeln!(
            f,
            "gets      {} (hits {}, misses {}, hit ratio {:.2}%)",
            s.hits + s.misses,
            s.hits,
            s.misses,
            self.hit_ratio() * 100.0
        )?;
        writeln!(f, "sets      {}", s.sets)?;
        writeln!(
            f,
            "errors    {} (timeouts {}, lost {}, verify {}; reconnects {})",
            s.errors, s.timeouts, s.lost, s.verify_failures, s.reconnects
        )?;
        write!(
            f,
            "latency   ms  mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.mean / 1000.0,
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p99_9),
            ms(l.max)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_split_between_connections() {
        let mut config = BenchConfig::new("127.0.0.1:1");
        config.connections = 3;
        config.stop = Stop::Requests(10);
        let start = Instant::now();
        let counts: Vec<u64> = (0..3)
            .map(|i| {
                let mut plan = Plan::mix(&config, i, start);
                let mut n = 0;
                while plan.take(Instant::now()).is_some() {
                    n += 1;
                }
                n
            })
            .collect();
        assert_eq!(counts, vec![4, 3, 3]);
    }

    #[test]
    fn the_mix_follows_the_ratio() {
        let mut config = BenchConfig::new("127.0.0.1:1");
        config.ratio = (1, 3);
        config.stop = Stop::Requests(400);
        config.connections = 1;
        let mut plan = Plan::mix(&config, 0, Instant::now());
        let mut sets = 0;
        while let Some(item) = plan.take(Instant::now()) {
            sets += u32::from(item.op == Op::Set);
            assert!(item.key < config.key_space);
        }
        assert_eq!(sets, 100);
    }

    #[test]
    fn prefill_covers_every_key_once() {
        let mut seen = vec![0u8; 1001];
        for i in 0..7 {
            let mut plan = Plan::prefill(1001, 7, i);
            while let Some(item) = plan.take(Instant::now()) {
                assert_eq!(item.op, Op::Set);
                seen[item.key as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
    }

    #[test]
    fn a_rate_plan_hands_out_intended_times_and_stops_at_the_deadline() {
        let mut config = BenchConfig::new("127.0.0.1:1");
        config.connections = 1;
        config.rate = Some(100.0);
        config.stop = Stop::After(Duration::from_millis(50));
        let start = Instant::now();
        let mut plan = Plan::mix(&config, 0, start);
        // Waking at 45 ms, the 5 requests intended so far are due, each with
        // its own time; the next one would be at the deadline, so none is.
        let late = start + Duration::from_millis(45);
        let times: Vec<_> = std::iter::from_fn(|| plan.take(late))
            .map(|i| i.intended.unwrap().duration_since(start))
            .collect();
        assert_eq!(times.len(), 5);
        assert_eq!(times[4], Duration::from_millis(40));
        assert!(plan.finished(late));
        // A sender that wakes only after the deadline still owes every
        // request intended before it.
        let mut plan = Plan::mix(&config, 0, start);
        let very_late = start + Duration::from_secs(5);
        assert_eq!(std::iter::from_fn(|| plan.take(very_late)).count(), 5);
        assert!(plan.finished(very_late));
    }

    #[test]
    fn config_validation() {
        let ok = BenchConfig::new("127.0.0.1:1");
        assert!(ok.validate().is_ok());
        let mut bad = ok.clone();
        bad.ratio = (0, 0);
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.value_size = (10, 5);
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.login = Some(Login {
            username: "has space".into(),
            password: "secret".into(),
        });
        assert!(bad.validate().is_err());
        assert!(!format!("{:?}", bad.login).contains("secret"));
    }
}
