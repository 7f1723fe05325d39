//! `memgate bench --churn`: every request on a connection of its own.
//!
//! Each worker loops: connect (TCP, then TLS and the login as configured),
//! send one request of the mix, read its reply and judge it like any other
//! (verified with `verify`), close. This is what a client that keeps no
//! connections costs a server or a proxy: the accept and the session set-up,
//! and behind a hop that terminates TLS per client (stunnel in client mode),
//! a handshake per connection.
//!
//! Each attempt is one op and ends as a hit, a miss, a set or an error; the
//! errors split into connect failures (refused, or the TLS handshake or the
//! login failed), timeouts (no reply within `timeout`, which bounds the
//! whole attempt, connect included), lost (closed before the reply, or a
//! malformed or surplus reply) and wrong values. Latency runs from the start
//! of the connect (with a rate, from the intended time) to the whole reply.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use super::conn::{self, BenchReply, Conn, Op, WireError};
use super::drive::{read_reply, until_due};
use super::keys;
use super::plan::{Item, Plan};
use super::stats::Stats;
use super::{BenchError, Ctx, Live};

/// After a failed connect a worker waits this long: a refused connection or
/// a run out of local ports would otherwise spin the worker, and the load
/// generator's core with it, on failures.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// The one request of a connection carries this (binary) opaque.
const OPAQUE: u32 = 1;

/// One worker per plan, until every plan is done.
pub(super) async fn phase(
    ctx: &Arc<Ctx>,
    live: &Arc<Live>,
    plans: Vec<Plan>,
) -> Result<Stats, BenchError> {
    let addrs: Arc<[SocketAddr]> = resolve(&ctx.config.server).await?.into();
    let mut tasks = JoinSet::new();
    for plan in plans {
        let (ctx, live, addrs) = (Arc::clone(ctx), Arc::clone(live), Arc::clone(&addrs));
        tasks.spawn(async move { worker(&ctx, &live, &addrs, plan).await });
    }
    let mut total = Stats::new()?;
    while let Some(joined) = tasks.join_next().await {
        let stats = joined.map_err(|e| BenchError::Internal(e.to_string()))??;
        total.merge(&stats);
    }
    Ok(total)
}

/// Resolved once, so that no connection waits on a lookup; each connect
/// tries the addresses in turn, as a connect by name would.
async fn resolve(server: &str) -> Result<Vec<SocketAddr>, BenchError> {
    let unreachable = |reason: String| BenchError::Connect {
        server: server.to_string(),
        reason,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(server)
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(unreachable("no address".into()));
    }
    Ok(addrs)
}

/// How an attempt failed.
#[derive(Debug)]
pub(super) enum Failed {
    /// No connection: refused, or the handshake or the login failed.
    Connect(BenchError),
    /// The connection closed before a whole reply, or the reply was
    /// malformed or followed by bytes nobody asked for.
    Reply(WireError),
}

async fn worker(
    ctx: &Ctx,
    live: &Live,
    addrs: &[SocketAddr],
    mut plan: Plan,
) -> Result<Stats, BenchError> {
    let mut stats = Stats::new()?;
    let (mut out, mut buf) = (BytesMut::new(), BytesMut::new());
    while until_due(&plan).await {
        let now = Instant::now();
        let Some(item) = plan.take(now) else {
            continue;
        };
        let start = item.intended.unwrap_or(now);
        let connection = async {
            let conn = conn::connect_to(&ctx.config, addrs)
                .await
                .map_err(Failed::Connect)?;
            attempt(ctx, conn, &item, &mut out, &mut buf).await
        };
        match tokio::time::timeout(ctx.config.timeout, connection).await {
            Ok(Ok(reply)) => stats.reply(ctx, live, item.key, start.elapsed(), reply),
            Ok(Err(Failed::Connect(error))) => {
                tracing::debug!(%error, "churn: no connection");
                stats.connect_failed(live);
                tokio::time::sleep(CONNECT_BACKOFF).await;
            }
            Ok(Err(Failed::Reply(error))) => {
                tracing::debug!(%error, "churn: no reply");
                stats.failed(live, false);
            }
            Err(_) => stats.failed(live, true),
        }
    }
    stats.sent = plan.taken;
    Ok(stats)
}

/// Send `item` on `conn`, read the whole reply and close the connection.
pub(super) async fn attempt(
    ctx: &Ctx,
    mut conn: Conn,
    item: &Item,
    out: &mut BytesMut,
    buf: &mut BytesMut,
) -> Result<BenchReply, Failed> {
    let wire = |e: std::io::Error| Failed::Reply(WireError(e.to_string()));
    out.clear();
    buf.clear();
    let value = (item.op == Op::Set).then(|| ctx.values.get(item.key));
    ctx.codec
        .encode(item.op, keys::key(item.key), value, OPAQUE, out)
        .map_err(Failed::Reply)?;
    conn.write_all(out).await.map_err(wire)?;
    conn.flush().await.map_err(wire)?;
    let reply = read_reply(&ctx.codec, &mut conn, buf, item.op, OPAQUE)
        .await
        .map_err(Failed::Reply)?;
    if !buf.is_empty() {
        return Err(Failed::Reply(WireError(format!(
            "{} bytes after the reply",
            buf.len()
        ))));
    }
    Ok(reply)
}
