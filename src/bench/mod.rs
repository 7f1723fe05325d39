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
//! - With `churn`, each request goes on a connection of its own (connect,
//!   one request, close; [`churn`]), to measure connection set-up.
//! - With `check`, the run is a consistency check instead ([`check`]): every
//!   value says who wrote it, and every reply is judged.

pub mod check;
mod churn;
mod config;
pub mod conn;
mod drive;
pub mod keys;
mod pacer;
mod plan;
mod report;
pub mod schedule;
mod stats;

pub use config::{
    BenchConfig, Login, Protocol, Stop, TlsTarget, MAX_CONNECTIONS, MAX_PIPELINE, MAX_VALUE_SIZE,
};
pub use report::{Latency, PrefillReport, Report, CURVE_QUANTILES};
pub use stats::Stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use conn::{BenchCodec, Conn};
use drive::phase;
use keys::Values;
use plan::Plan;

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
    codec: BenchCodec,
}

/// Counters the progress line reads while the run goes on.
#[derive(Default)]
struct Live {
    ops: AtomicU64,
    errors: AtomicU64,
    latency_us: AtomicU64,
}

/// Prefill uses at least this deep a pipeline: it is not measured.
const PREFILL_PIPELINE: usize = 32;

/// Run the benchmark.
pub async fn run(config: BenchConfig) -> Result<Report, BenchError> {
    config.validate()?;
    let ctx = Arc::new(Ctx {
        values: Values::new(config.value_size.0, config.value_size.1),
        codec: BenchCodec::new(config.protocol),
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

    // A check sets its own keys first (its values are not the bench's).
    let prefill = if ctx.config.prefill && ctx.config.check.is_none() {
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
    if let Some(options) = ctx.config.check.clone() {
        let result = check::run(&ctx.config, options, &live, conns).await;
        let elapsed = start.elapsed();
        if let Some(progress) = progress {
            progress.abort();
        }
        let (stats, check) = result?;
        let mut report = Report::new(&ctx.config, stats, elapsed, prefill);
        report.check = Some(check);
        return Ok(report);
    }
    let plans = (0..n).map(|i| Plan::mix(&ctx.config, i, start)).collect();
    let result = if ctx.config.churn {
        // The connections above showed that the server takes them (and the
        // login); churn opens its own.
        drop(conns);
        churn::phase(&ctx, &live, plans).await
    } else {
        phase(&ctx, &live, conns, plans, ctx.config.pipeline)
            .await
            .map(|(_, stats)| stats)
    };
    let elapsed = start.elapsed();
    if let Some(progress) = progress {
        progress.abort();
    }
    let stats = result?;
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

#[cfg(test)]
mod tests;
