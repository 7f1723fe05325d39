//! One `--check` connection: its plan, its writer and reader, reconnects.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, Semaphore};

use super::super::conn::{self, Conn};
use super::super::keys::{mix, Rng};
use super::super::stats::Stats;
use super::super::{Live, Protocol, Stop};
use super::model::{self, Model, Verdict};
use super::wire::{binary_opcode, Broken, Outcome, Part, Wire};
use super::{CheckCtx, KeyMode, Tally};

/// Bound on sessions per connection: each out-of-order reply costs one.
const MAX_SESSIONS: u32 = 1000;
/// Requests batched into one write.
const BATCH_BYTES: usize = 64 * 1024;
/// One write in this many is a delete (own keys only: with shared keys a
/// delete by anyone could explain any miss, and lost writes could not be
/// told).
const DELETE_EVERY: u64 = 8;

/// What one connection sends, in order.
pub(super) struct CheckPlan {
    rng: Rng,
    /// This connection's keys: `first..first + count`.
    first: u64,
    count: u64,
    /// Set every key once before the mix.
    prefill: u64,
    sets: u64,
    cycle: u64,
    counter: u64,
    multiget: u64,
    quiet: bool,
    deletes: bool,
    remaining: Option<u64>,
    deadline: Option<Instant>,
    pub(super) taken: u64,
}

/// One operation of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Set(u64),
    Delete(u64),
    Get(Vec<u64>),
}

impl CheckPlan {
    pub(super) fn new(ctx: &CheckCtx, index: usize, start: Instant) -> CheckPlan {
        let config = &ctx.config;
        let n = config.connections as u64;
        let i = index as u64;
        let (first, count) = match ctx.options.keys {
            KeyMode::Own => {
                let per = (config.key_space / n).max(1);
                (i * per, per)
            }
            KeyMode::Shared => (0, config.key_space),
        };
        let (remaining, deadline) = match config.stop {
            Stop::After(d) => (None, Some(start + d)),
            Stop::Requests(total) => (Some(total / n + u64::from(i < total % n)), None),
        };
        CheckPlan {
            rng: Rng::new(mix(0x0063_6865_636b ^ i)),
            first,
            count,
            prefill: if config.prefill { count } else { 0 },
            sets: u64::from(config.ratio.0),
            cycle: u64::from(config.ratio.0) + u64::from(config.ratio.1),
            counter: 0,
            multiget: (ctx.options.multiget as u64).clamp(1, count),
            quiet: ctx.options.quiet && config.protocol != Protocol::Text,
            deletes: ctx.options.keys == KeyMode::Own,
            remaining,
            deadline,
            taken: 0,
        }
    }

    pub(super) fn finished(&self, now: Instant) -> bool {
        self.remaining == Some(0) || self.deadline.is_some_and(|d| now >= d)
    }

    /// The next operation and whether to send it quiet.
    pub(super) fn take(&mut self, now: Instant) -> Option<(Step, bool)> {
        if self.finished(now) {
            return None;
        }
        if let Some(r) = &mut self.remaining {
            *r -= 1;
        }
        self.taken += 1;
        let quiet = self.quiet && self.rng.next_u64() & 1 == 1;
        if self.taken <= self.prefill {
            return Some((Step::Set(self.first + self.taken - 1), quiet));
        }
        let write = self.counter % self.cycle < self.sets;
        self.counter += 1;
        let key = self.first + self.rng.below(self.count);
        let step = if !write {
            // Consecutive keys: behind a proxy they land on different nodes.
            Step::Get(
                (0..self.multiget)
                    .map(|j| self.first + (key - self.first + j) % self.count)
                    .collect(),
            )
        } else if self.deletes && self.rng.below(DELETE_EVERY) == 0 {
            Step::Delete(key)
        } else {
            Step::Set(key)
        };
        Some((step, quiet))
    }
}

/// A connection's state that outlives its sessions.
pub(super) struct Driver<'a> {
    pub(super) ctx: &'a CheckCtx,
    pub(super) live: &'a Live,
    pub(super) index: u32,
    pub(super) model: Model,
    pub(super) tally: Tally,
    pub(super) stats: Stats,
    /// This connection's last write sent, per key.
    last_sent: HashMap<u64, u64>,
    opaque: u32,
}

impl<'a> Driver<'a> {
    pub(super) fn new(ctx: &'a CheckCtx, live: &'a Live, index: u32, stats: Stats) -> Driver<'a> {
        Driver {
            ctx,
            live,
            index,
            model: Model::new(index, ctx.options.keys == KeyMode::Shared),
            tally: Tally::default(),
            stats,
            last_sent: HashMap::new(),
            opaque: 0,
        }
    }

    /// Run `plan`, reconnecting when the connection breaks.
    pub(super) async fn run(&mut self, mut conn: Option<Conn>, plan: &mut CheckPlan) {
        for _ in 0..MAX_SESSIONS {
            let current = match conn.take() {
                Some(c) => c,
                None => {
                    let finished = || plan.finished(Instant::now());
                    match conn::reconnect(&self.ctx.config, finished, &mut self.stats).await {
                        Some(c) => c,
                        None => return,
                    }
                }
            };
            if self.session(current, plan).await || plan.finished(Instant::now()) {
                return;
            }
        }
    }

    /// One connection until the plan is done (true) or it breaks.
    async fn session(&mut self, conn: Conn, plan: &mut CheckPlan) -> bool {
        let (reader_half, writer_half) = tokio::io::split(conn);
        let window = Arc::new(Semaphore::new(self.ctx.config.pipeline));
        let (tx, rx) = mpsc::unbounded_channel();
        let ctx = self.ctx;
        let index = self.index;
        let (last_sent, opaque) = (&mut self.last_sent, &mut self.opaque);
        let mut reader = Reader {
            ctx,
            live: self.live,
            model: &mut self.model,
            tally: &mut self.tally,
            stats: &mut self.stats,
            queue: VecDeque::new(),
        };
        let (done, mut rx) = {
            let writer = write_loop(ctx, index, writer_half, plan, last_sent, opaque, window, tx);
            let read = reader.read_loop(reader_half, rx);
            tokio::pin!(writer, read);
            tokio::select! {
                biased;
                written = &mut writer => {
                    let (rx, broken) = read.await;
                    (written.is_ok() && !broken, rx)
                }
                // The reader stops early only when the connection broke;
                // the writer, maybe stuck on a full socket, is dropped.
                (rx, _) = &mut read => (false, rx),
            }
        };
        if !done {
            // Whatever is still queued or in flight is indeterminate.
            rx.close();
            while let Ok(wire) = rx.try_recv() {
                reader.queue.push_back(wire);
            }
            reader.abandon();
        }
        done
    }
}

#[allow(clippy::too_many_arguments)]
async fn write_loop(
    ctx: &CheckCtx,
    index: u32,
    mut out_half: WriteHalf<Conn>,
    plan: &mut CheckPlan,
    last_sent: &mut HashMap<u64, u64>,
    opaque: &mut u32,
    window: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Wire>,
) -> Result<(), ()> {
    let mut out = BytesMut::with_capacity(BATCH_BYTES);
    loop {
        if plan.finished(Instant::now()) {
            break;
        }
        let Ok(first) = Arc::clone(&window).acquire_owned().await else {
            break;
        };
        out.clear();
        let mut slot = Some(first);
        let mut ends_quiet = false;
        while let Some(permit) = slot.take() {
            let now = Instant::now();
            let Some((step, quiet)) = plan.take(now) else {
                break;
            };
            let permit = Arc::new(permit);
            let parts: Vec<(Part, bool)> = match step {
                Step::Set(key) | Step::Delete(key) => {
                    let seq = ctx.seqs.next(key);
                    last_sent.insert(key, seq);
                    let part = if matches!(step, Step::Set(_)) {
                        Part::Set { key, seq }
                    } else {
                        Part::Delete { key, seq }
                    };
                    vec![(part, quiet)]
                }
                Step::Get(keys) => {
                    let with_sent = keys
                        .iter()
                        .map(|&key| (key, last_sent.get(&key).copied().unwrap_or(0)));
                    match ctx.config.protocol {
                        // One `get k1 k2 …`.
                        Protocol::Text => vec![(
                            Part::TextGet {
                                keys: with_sent.collect(),
                            },
                            false,
                        )],
                        // GETKQ / `mg q` per key and a NOOP / `mn`, as
                        // clients do a multi-key get in these dialects.
                        _ if keys.len() > 1 => with_sent
                            .map(|(key, sent_after)| (Part::Get { key, sent_after }, true))
                            .chain([(Part::End, false)])
                            .collect(),
                        _ => with_sent
                            .map(|(key, sent_after)| (Part::Get { key, sent_after }, quiet))
                            .collect(),
                    }
                }
            };
            for (part, quiet) in parts {
                *opaque = opaque.wrapping_add(1);
                ends_quiet = quiet;
                let wire = Wire {
                    opcode: binary_opcode(&part, quiet),
                    part,
                    opaque: *opaque,
                    quiet,
                    sent: now,
                    slot: Some(Arc::clone(&permit)),
                };
                enqueue(ctx, index, wire, &mut out, &tx)?;
            }
            if out.len() < BATCH_BYTES {
                slot = Arc::clone(&window).try_acquire_owned().ok();
            }
        }
        if ends_quiet {
            // Close the batch, so that its quiet requests resolve now
            // rather than whenever the next loud reply comes.
            *opaque = opaque.wrapping_add(1);
            let end = Wire {
                opcode: binary_opcode(&Part::End, false),
                part: Part::End,
                opaque: *opaque,
                quiet: false,
                sent: Instant::now(),
                slot: None,
            };
            enqueue(ctx, index, end, &mut out, &tx)?;
        }
        if !out.is_empty() {
            out_half.write_all(&out).await.map_err(|_| ())?;
            out_half.flush().await.map_err(|_| ())?;
        }
    }
    Ok(())
}

/// Encode `wire` into `out` (a set with its value) and queue it for the
/// reader, before it is written: a reply can only follow the write.
fn enqueue(
    ctx: &CheckCtx,
    writer: u32,
    wire: Wire,
    out: &mut BytesMut,
    tx: &mpsc::UnboundedSender<Wire>,
) -> Result<(), ()> {
    let value = match wire.part {
        Part::Set { key, seq } => Some(model::encode(
            model::Stamp { writer, key, seq },
            ctx.value_len(key),
        )),
        _ => None,
    };
    if let Err(error) = ctx
        .codec
        .encode(&wire.part, value, wire.quiet, wire.opaque, out)
    {
        tracing::error!(%error, "cannot encode a check request");
        return Err(());
    }
    tx.send(wire).map_err(|_| ())
}

/// The reading side of a session: matches replies to the queue and feeds
/// the model.
struct Reader<'a> {
    ctx: &'a CheckCtx,
    live: &'a Live,
    model: &'a mut Model,
    tally: &'a mut Tally,
    stats: &'a mut Stats,
    /// Requests written (or about to be) and not yet answered, oldest first.
    queue: VecDeque<Wire>,
}

impl Reader<'_> {
    /// Read until the writer is done and every reply is in (false), or the
    /// connection breaks (true). Returns the writer's queue either way.
    async fn read_loop(
        &mut self,
        mut in_half: ReadHalf<Conn>,
        mut rx: mpsc::UnboundedReceiver<Wire>,
    ) -> (mpsc::UnboundedReceiver<Wire>, bool) {
        let mut buf = BytesMut::with_capacity(BATCH_BYTES);
        loop {
            if self.queue.is_empty() {
                match rx.recv().await {
                    Some(wire) => self.queue.push_back(wire),
                    None => return (rx, false),
                }
            }
            while let Ok(wire) = rx.try_recv() {
                self.queue.push_back(wire);
            }
            // Parse whatever is buffered before reading more.
            match self.ctx.codec.next(&buf, self.queue.iter()) {
                Ok(Some((outcomes, used))) => {
                    buf.advance(used);
                    for outcome in outcomes {
                        if let Some(wire) = self.queue.pop_front() {
                            self.apply(&wire, outcome);
                        }
                    }
                    continue;
                }
                Ok(None) => {}
                Err(broken) => {
                    self.broken(broken);
                    return (rx, true);
                }
            }
            let Some(front) = self.queue.front() else {
                continue;
            };
            let deadline = tokio::time::Instant::from_std(front.sent + self.ctx.config.timeout);
            tokio::select! {
                read = tokio::time::timeout_at(deadline, in_half.read_buf(&mut buf)) => match read {
                    Ok(Ok(n)) if n > 0 => {}
                    Ok(_) => {
                        self.tally.error("connection closed with requests in flight".into());
                        return (rx, true);
                    }
                    Err(_) => {
                        self.tally.timeouts += 1;
                        self.stats.timeouts += 1;
                        return (rx, true);
                    }
                },
                // More requests to match against while waiting.
                Some(wire) = rx.recv() => self.queue.push_back(wire),
            }
        }
    }

    /// What one request came to.
    fn apply(&mut self, wire: &Wire, outcome: Outcome) {
        let latency = Instant::now().saturating_duration_since(wire.sent);
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        match (&wire.part, outcome) {
            (Part::End, _) => return,
            (Part::Set { key, seq }, Outcome::Acked) => {
                self.model.ack(*key, *seq, false);
                self.stats.sets += 1;
                self.tally.writes += 1;
            }
            (Part::Delete { key, seq }, Outcome::Acked) => {
                self.model.ack(*key, *seq, true);
                self.stats.sets += 1;
                self.tally.writes += 1;
            }
            (Part::Set { key, seq }, Outcome::Error(e)) => {
                self.model.doubt(*key, *seq, false);
                self.tally.in_doubt += 1;
                self.count_error(e);
            }
            (Part::Delete { key, seq }, Outcome::Error(e)) => {
                self.model.doubt(*key, *seq, true);
                self.tally.in_doubt += 1;
                self.count_error(e);
            }
            (Part::Get { key, sent_after }, Outcome::Read(values)) => {
                let value = values.into_iter().next().flatten();
                let hit = self.judge(*key, *sent_after, value.as_deref());
                if hit {
                    self.stats.hits += 1;
                } else {
                    self.stats.misses += 1;
                }
            }
            (Part::TextGet { keys }, Outcome::Read(values)) => {
                let mut any = false;
                for (&(key, sent_after), value) in keys.iter().zip(values) {
                    any |= self.judge(key, sent_after, value.as_deref());
                }
                if any {
                    self.stats.hits += 1;
                } else {
                    self.stats.misses += 1;
                }
            }
            (Part::Get { .. } | Part::TextGet { .. }, Outcome::Error(e)) => self.count_error(e),
            (part, outcome) => {
                // The wire layer only gives each part its own outcomes.
                self.count_error(format!("{outcome:?} for {part:?}"));
            }
        }
        self.stats.latency.saturating_record(us);
        self.live
            .ops
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.live
            .latency_us
            .fetch_add(us, std::sync::atomic::Ordering::Relaxed);
    }

    /// Judge one key's read; true for a hit.
    fn judge(&mut self, key: u64, sent_after: u64, value: Option<&[u8]>) -> bool {
        let hit = value.is_some();
        let last = self.ctx.seqs.last(key);
        let verdict = self
            .model
            .judge(key, sent_after, last, self.ctx.value_len(key), value);
        self.tally.reads += 1;
        match verdict {
            Verdict::Verified { .. } => self.tally.verified += 1,
            Verdict::MissAfterAck => {
                self.tally.miss_after_ack += 1;
                self.tally.example(format!(
                    "conn {}: miss of key {key} after an acknowledged set",
                    self.model_conn()
                ));
            }
            Verdict::Violation(kind, what) => {
                let conn = self.model_conn();
                self.tally.violation(kind, format!("conn {conn}: {what}"));
            }
        }
        hit
    }

    fn model_conn(&self) -> u32 {
        self.model.conn()
    }

    fn count_error(&mut self, what: String) {
        self.stats.errors += 1;
        self.live
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.tally.error(what);
    }

    /// The stream broke: out of order is a violation, anything else an error.
    fn broken(&mut self, broken: Broken) {
        match broken {
            Broken::OutOfOrder(what) => {
                let conn = self.model_conn();
                self.tally
                    .violation(model::Kind::OutOfOrder, format!("conn {conn}: {what}"));
            }
            Broken::Malformed(what) => self.tally.error(what),
        }
    }

    /// The connection is gone: its writes in flight are indeterminate, its
    /// reads unanswered.
    fn abandon(&mut self) {
        while let Some(wire) = self.queue.pop_front() {
            match wire.part {
                Part::Set { key, seq } => self.model.doubt(key, seq, false),
                Part::Delete { key, seq } => self.model.doubt(key, seq, true),
                Part::End => continue,
                Part::Get { .. } | Part::TextGet { .. } => {}
            }
            if !matches!(wire.part, Part::Get { .. } | Part::TextGet { .. }) {
                self.tally.in_doubt += 1;
            }
            self.tally.unanswered += 1;
            self.stats.lost += 1;
            self.stats.errors += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::BenchConfig;
    use super::super::{wire, CheckOptions};
    use super::*;

    fn ctx(keys: KeyMode, key_space: u64, multiget: usize) -> CheckCtx {
        let mut config = BenchConfig::new("127.0.0.1:1");
        config.connections = 4;
        config.key_space = key_space;
        config.ratio = (1, 1);
        config.stop = Stop::Requests(4000);
        CheckCtx {
            codec: wire::CheckCodec::new(config.protocol, wire::Keys::new(1)),
            seqs: model::Seqs::new(key_space),
            config,
            options: CheckOptions {
                keys,
                multiget,
                ..CheckOptions::default()
            },
        }
    }

    fn steps(ctx: &CheckCtx, index: usize) -> Vec<Step> {
        let mut plan = CheckPlan::new(ctx, index, Instant::now());
        std::iter::from_fn(|| plan.take(Instant::now()).map(|(step, _)| step)).collect()
    }

    #[test]
    fn own_keys_stay_with_their_connection_and_gets_ask_distinct_keys() {
        let ctx = ctx(KeyMode::Own, 100, 4);
        let steps = steps(&ctx, 2);
        assert_eq!(steps.len(), 1000);
        let mine = 50..75;
        let mut deletes = 0;
        for step in &steps {
            match step {
                Step::Set(k) => assert!(mine.contains(k)),
                Step::Delete(k) => {
                    deletes += 1;
                    assert!(mine.contains(k));
                }
                Step::Get(keys) => {
                    assert_eq!(keys.len(), 4);
                    assert!(keys.iter().all(|k| mine.contains(k)), "{keys:?}");
                    let mut distinct = keys.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    assert_eq!(distinct.len(), 4, "{keys:?}");
                }
            }
        }
        // One write in eight, about: 500 writes.
        assert!((30..100).contains(&deletes), "{deletes}");
    }

    #[test]
    fn shared_keys_span_the_key_space_and_only_set() {
        let ctx = ctx(KeyMode::Shared, 100, 1);
        let steps = steps(&ctx, 3);
        assert!(steps.iter().all(|s| !matches!(s, Step::Delete(_))));
        let highest = steps
            .iter()
            .filter_map(|s| match s {
                Step::Set(k) => Some(*k),
                _ => None,
            })
            .max();
        assert!(highest > Some(75), "{highest:?}");
    }
}
