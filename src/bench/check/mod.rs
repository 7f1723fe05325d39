//! `memgate bench --check`: a consistency checker for any memcached
//! endpoint (memcached, twemproxy, the memgate sidecar or a node).
//!
//! Every connection writes values that say who wrote them, for which key,
//! as which write ([`model`]), reads them back through the same pipeline the
//! benchmark uses, and judges every reply against its own model of what it
//! wrote and what was acknowledged. Violations are counted by kind (stale,
//! foreign, lost, corrupt, out of order) with a few examples; errors and
//! timeouts are counted too, but they are not violations: a write whose
//! outcome is unknown may or may not have happened.
//!
//! Keys live in a fresh namespace per run (`mgc:<run>:<index>`), so each
//! starts absent. The server's `stats` are read before and after (from the
//! endpoint, or from `check_stats_from`, the servers behind a proxy): a miss
//! after an acknowledged set is `lost` only if the stats were read and show
//! no eviction, flush or restart; otherwise it is reported as explained, or
//! as unexplained when the stats could not be read, never as a violation.

mod drive;
pub mod model;
mod stats;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;

use super::conn::Conn;
use super::keys::mix;
use super::stats::Stats;
use super::{BenchConfig, BenchError, Live};
pub use model::Kind;
pub use stats::ServerChange;

/// Whose keys a connection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMode {
    /// Each connection its own keys: every read is judged against the
    /// reader's own writes (read-your-writes, monotonic writes, no loss).
    Own,
    /// Every connection reads and writes every key; only sets are written
    /// (a delete by anyone would explain any miss).
    Shared,
}

/// What `--check` is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    pub keys: KeyMode,
    /// Keys per get: text `get k1 k2 …`, binary GETKQ… NOOP, meta `mg q`… `mn`.
    pub multiget: usize,
    /// Send about half the requests quiet (binary SETQ/DELETEQ/GETKQ, meta
    /// `q`), each batch closed by NOOP / `mn`. Text has no checkable quiet.
    pub quiet: bool,
    /// More errors than this (error replies, timeouts, requests lost with a
    /// connection) fail the check too; `None`: errors never fail it.
    pub max_errors: Option<u64>,
    /// Where to read `stats` for evictions and restarts (host:port, plain
    /// TCP, text protocol); empty: the endpoint itself, as the run connects.
    pub stats_from: Vec<String>,
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions {
            keys: KeyMode::Own,
            multiget: 1,
            quiet: false,
            max_errors: None,
            stats_from: Vec::new(),
        }
    }
}

/// The most keys one get asks for.
pub const MAX_MULTIGET: usize = 100;

/// Shared by the connections of a check run.
pub(super) struct CheckCtx {
    config: BenchConfig,
    options: CheckOptions,
    codec: wire::CheckCodec,
    seqs: model::Seqs,
}

impl CheckCtx {
    /// The length of every value of `key`: within the configured sizes, and
    /// long enough for the header, so that all writes of a key are as long.
    fn value_len(&self, key: u64) -> usize {
        let (min, max) = self.config.value_size;
        let span = (max - min) as u64 + 1;
        (min + (mix(key) % span) as usize).max(model::MIN_VALUE_LEN)
    }
}

/// Examples kept per kind (and for misses and errors), run-wide.
const EXAMPLES_PER_KIND: usize = 3;

/// What the connections counted.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Keys read whose result the model accepts.
    pub verified: u64,
    pub violations: HashMap<&'static str, u64>,
    /// Keys read (hits and misses).
    pub reads: u64,
    /// Writes acknowledged.
    pub writes: u64,
    /// Writes whose outcome is unknown.
    pub in_doubt: u64,
    /// Misses after an acknowledged set: lost unless the server explains them.
    pub miss_after_ack: u64,
    /// Error replies and broken connections.
    pub errors: u64,
    pub timeouts: u64,
    /// Requests in flight when their connection broke.
    pub unanswered: u64,
    pub examples: Vec<String>,
    example_counts: HashMap<String, usize>,
}

impl Tally {
    fn violation(&mut self, kind: Kind, what: String) {
        *self.violations.entry(kind.name()).or_default() += 1;
        self.keep(kind.name(), format!("{}: {what}", kind.name()));
    }

    fn example(&mut self, what: String) {
        self.keep("miss_after_ack", format!("miss_after_ack: {what}"));
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        self.keep("error", format!("error: {what}"));
    }

    fn keep(&mut self, kind: &str, line: String) {
        let seen = self.example_counts.entry(kind.to_string()).or_default();
        if *seen < EXAMPLES_PER_KIND {
            *seen += 1;
            self.examples.push(line);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.verified += other.verified;
        for (kind, n) in other.violations {
            *self.violations.entry(kind).or_default() += n;
        }
        self.reads += other.reads;
        self.writes += other.writes;
        self.in_doubt += other.in_doubt;
        self.miss_after_ack += other.miss_after_ack;
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.unanswered += other.unanswered;
        for line in other.examples {
            // Every line starts with its kind.
            let kind = line.split(':').next().unwrap_or_default().to_string();
            self.keep(&kind, line);
        }
    }

    pub fn count(&self, kind: Kind) -> u64 {
        self.violations.get(kind.name()).copied().unwrap_or(0)
    }
}

/// What `--check` found.
#[derive(Clone, Debug)]
pub struct CheckReport {
    pub options: CheckOptions,
    /// Key `i` of the examples is `<key_prefix><i>` on the server.
    pub key_prefix: String,
    pub tally: Tally,
    pub server: ServerChange,
    /// Misses after an acknowledged set counted as `lost`.
    pub lost: u64,
}

impl CheckReport {
    fn new(
        options: CheckOptions,
        key_prefix: String,
        mut tally: Tally,
        server: ServerChange,
    ) -> CheckReport {
        let explained = server.explains_misses();
        let lost = if explained.is_none() {
            tally.miss_after_ack
        } else {
            0
        };
        // Only now is it known what the misses were.
        let label = if explained.is_none() {
            "lost:"
        } else {
            "miss explained:"
        };
        for line in &mut tally.examples {
            if let Some(rest) = line.strip_prefix("miss_after_ack:") {
                *line = format!("{label}{rest}");
            }
        }
        CheckReport {
            options,
            key_prefix,
            tally,
            server,
            lost,
        }
    }

    pub fn count(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Lost => self.lost,
            other => self.tally.count(other),
        }
    }

    pub fn violations(&self) -> u64 {
        Kind::ALL.iter().map(|&k| self.count(k)).sum()
    }

    /// Errors as `--check-max-errors` counts them.
    pub fn errors(&self) -> u64 {
        self.tally.errors + self.tally.timeouts + self.tally.unanswered
    }

    /// Why the check failed, if it did.
    pub fn failure(&self) -> Option<String> {
        if self.violations() > 0 {
            return Some(format!("check failed: {}", self.summary()));
        }
        match self.options.max_errors {
            Some(max) if self.errors() > max => Some(format!(
                "check failed: {} errors, more than --check-max-errors {max}",
                self.errors()
            )),
            _ => None,
        }
    }

    /// One line for a human.
    pub fn summary(&self) -> String {
        let kinds = Kind::ALL
            .iter()
            .map(|&k| format!("{} {}", k.name(), self.count(k)))
            .collect::<Vec<_>>()
            .join(", ");
        let misses = match (self.tally.miss_after_ack, self.server.explains_misses()) {
            (0, _) => String::new(),
            (n, Some(why)) => format!("; {n} misses after acked sets explained by {why}"),
            (_, None) => String::new(),
        };
        format!(
            "{} {} violations in {} reads ({} verified; {kinds}){misses}; {} writes acked, {} in doubt; {} errors, {} timeouts",
            if self.violations() == 0 { "OK" } else { "FAIL" },
            self.violations(),
            self.tally.reads,
            self.tally.verified,
            self.tally.writes,
            self.tally.in_doubt,
            self.tally.errors + self.tally.unanswered,
            self.tally.timeouts,
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        let t = &self.tally;
        serde_json::json!({
            "passed": self.failure().is_none(),
            "summary": self.summary(),
            "keys": match self.options.keys { KeyMode::Own => "own", KeyMode::Shared => "shared" },
            "multiget": self.options.multiget,
            "key_prefix": self.key_prefix,
            "quiet": self.options.quiet,
            "verified": t.verified,
            "stale": self.count(Kind::Stale),
            "foreign": self.count(Kind::Foreign),
            "lost": self.count(Kind::Lost),
            "corrupt": self.count(Kind::Corrupt),
            "out_of_order": self.count(Kind::OutOfOrder),
            "violations": self.violations(),
            "reads": t.reads,
            "writes_acked": t.writes,
            "writes_in_doubt": t.in_doubt,
            "misses_after_ack": t.miss_after_ack,
            "misses_explained_by": self.server.explains_misses(),
            "errors": t.errors,
            "timeouts": t.timeouts,
            "unanswered": t.unanswered,
            "max_errors": self.options.max_errors,
            "server": self.server.to_json(),
            "examples": t.examples,
        })
    }
}

/// Run the check on `conns` (one per configured connection).
pub(super) async fn run(
    config: &BenchConfig,
    options: CheckOptions,
    live: &Arc<Live>,
    conns: Vec<Option<Conn>>,
) -> Result<(Stats, CheckReport), BenchError> {
    // A fresh key namespace per run: every key starts absent.
    let run_id = (mix(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id()))
        >> 32) as u32;
    let ctx = Arc::new(CheckCtx {
        codec: wire::CheckCodec::new(config.protocol, wire::Keys::new(run_id)),
        // With own keys and fewer keys than connections, each connection
        // still gets one key of its own: index `i` for connection `i`.
        seqs: model::Seqs::new(config.key_space.max(config.connections as u64)),
        config: config.clone(),
        options: options.clone(),
    });
    let before = stats::read(config, &options).await;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (index, conn) in conns.into_iter().enumerate() {
        let (ctx, live) = (Arc::clone(&ctx), Arc::clone(live));
        tasks.spawn(async move {
            let mut plan = drive::CheckPlan::new(&ctx, index, start);
            let stats = Stats::new()?;
            let mut driver = drive::Driver::new(&ctx, &live, index as u32, stats);
            driver.run(conn, &mut plan).await;
            let mut stats = driver.stats;
            stats.sent = stats.hits + stats.misses + stats.sets + stats.errors;
            Ok::<_, BenchError>((stats, driver.tally))
        });
    }
    let mut total = Stats::new()?;
    let mut tally = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        let (stats, t) = joined.map_err(|e| BenchError::Internal(e.to_string()))??;
        total.merge(&stats);
        tally.merge(t);
    }
    let after = stats::read(config, &options).await;
    let server = ServerChange::between(before, after);
    let prefix = ctx.codec.keys.prefix();
    Ok((total, CheckReport::new(options, prefix, tally, server)))
}
