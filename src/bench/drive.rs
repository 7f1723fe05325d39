//! The drive loops: one connection's writer and reader, reconnects, and a
//! phase over every connection.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::conn::{self, BenchCodec, BenchReply, Conn, Op};
use super::keys;
use super::plan::{Plan, Wait};
use super::stats::{InFlight, Stats};
use super::{BenchError, Ctx, Live};

/// Wait until the plan's next request is due; false when the plan is done.
pub(super) async fn until_due(plan: &Plan) -> bool {
    match plan.wait(Instant::now()) {
        Wait::Done => false,
        Wait::Until(at) => {
            super::pacer::until(at).await;
            true
        }
        Wait::Now => true,
    }
}

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
            None => conn::reconnect(&ctx.config, || plan.finished(Instant::now()), stats).await?,
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
        if !until_due(plan).await {
            break;
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
                // With a rate, from the intended time (never after the
                // write, see `pace_until`), so a late send counts as latency.
                start: item.intended.unwrap_or(now),
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
        if ctx.config.rate.is_some() {
            stats.sent_late(request.sent.saturating_duration_since(request.start));
        }
        let deadline = tokio::time::Instant::from_std(request.sent + ctx.config.timeout);
        let got = tokio::time::timeout_at(
            deadline,
            read_reply(
                &ctx.codec,
                &mut in_half,
                &mut buf,
                request.op,
                request.opaque,
            ),
        )
        .await;
        match got {
            Ok(Ok(reply)) => {
                let latency = Instant::now().saturating_duration_since(request.start);
                stats.reply(ctx, live, request.key, latency, reply);
            }
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

/// Read the reply to `op` (binary: carrying `opaque`), buffering in `buf`.
pub(super) async fn read_reply(
    codec: &BenchCodec,
    in_half: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    op: Op,
    opaque: u32,
) -> Result<BenchReply, conn::WireError> {
    // Each turn either returns or reads at least one byte; the caller's
    // timeout bounds the whole.
    loop {
        if let Some((reply, used)) = codec.parse(op, opaque, buf)? {
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
pub(super) async fn phase(
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
