//! What a run measured: [`Report`], as text (`Display`) or JSON.

use std::fmt;
use std::time::Duration;

use super::check::CheckReport;
use super::config::{BenchConfig, Protocol};
use super::keys::KeyPattern;
use super::stats::Stats;
use hdrhistogram::Histogram;

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

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "mean": self.mean,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "p99_9": self.p99_9,
            "max": self.max,
        })
    }
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
    /// Each request on a connection of its own; `ops` are then connections.
    pub churn: bool,
    pub elapsed: Duration,
    pub stats: Stats,
    pub latency: Latency,
    /// With a rate: how late requests left behind their intended times.
    pub send_lag: Option<Latency>,
    /// The latency distribution: (quantile, microseconds) at
    /// [`CURVE_QUANTILES`], for percentile plots.
    pub curve: Vec<(f64, u64)>,
    pub prefill: Option<PrefillReport>,
    /// With `check`: what the consistency check found.
    pub check: Option<CheckReport>,
}

/// Where the latency distribution is sampled: the minimum, the body, a tail
/// dense enough for a percentile plot on a log scale, and the maximum.
pub const CURVE_QUANTILES: [f64; 19] = [
    0.0, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.997, 0.998, 0.999,
    0.9995, 0.9997, 0.9999, 1.0,
];

impl Report {
    pub(super) fn new(
        config: &BenchConfig,
        stats: Stats,
        elapsed: Duration,
        prefill: Option<PrefillReport>,
    ) -> Report {
        let h = &stats.latency;
        let latency = Latency::of(h);
        let send_lag = config.rate.map(|_| Latency::of(&stats.send_lag));
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
            churn: config.churn,
            elapsed,
            stats,
            latency,
            send_lag,
            curve,
            prefill,
            check: None,
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

    /// Requests that got a real reply (hit, miss or stored), per second:
    /// with churn, the connections that did.
    pub fn answered_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            (self.ops() - self.stats.errors) as f64 / secs
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
            "churn": self.churn,
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "ops": self.ops(),
            "sent": s.sent,
            "ops_per_sec": self.ops_per_sec(),
            "answered_per_sec": self.answered_per_sec(),
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
            "latency_us": l.to_json(),
            "send_lag_us": self.send_lag.map(Latency::to_json),
            "latency_curve_us": self
                .curve
                .iter()
                .map(|&(q, us)| serde_json::json!([q, us]))
                .collect::<Vec<_>>(),
            "latency_from": match (self.rate.is_some(), self.churn) {
                (true, _) => "intended",
                (false, true) => "connect",
                (false, false) => "sent",
            },
            "prefill": self.prefill.as_ref().map(|p| serde_json::json!({
                "keys": p.keys,
                "sets": p.sets,
                "errors": p.errors,
                "elapsed_seconds": p.elapsed.as_secs_f64(),
            })),
            "check": self.check.as_ref().map(CheckReport::to_json),
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
        let shape = if self.churn {
            format!(
                "{} workers, churn (connect, one request, close)",
                self.connections
            )
        } else {
            format!(
                "{} connections x pipeline {}",
                self.connections, self.pipeline
            )
        };
        writeln!(
            f,
            "memgate bench: {} {}{}{}, {shape}, SET:GET {}:{}, {} keys ({}), values {}",
            self.server,
            self.protocol.name(),
            if self.tls { " + TLS" } else { "" },
            if self.login { " + login" } else { "" },
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
        let from = if self.churn {
            "its connect to its reply"
        } else {
            "each send"
        };
        match self.rate {
            Some(rate) => writeln!(
                f,
                "rate      {rate} ops/s offered; latency counted from each request's intended send time"
            )?,
            None => writeln!(f, "rate      closed loop; latency counted from {from}")?,
        }
        writeln!(
            f,
            "{:<10}{} in {:.2}s = {:.0} {}/s ({:.0}/s answered)",
            if self.churn { "conns" } else { "ops" },
            self.ops(),
            self.elapsed.as_secs_f64(),
            self.ops_per_sec(),
            if self.churn { "connections" } else { "ops" },
            self.answered_per_sec()
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
            "errors    {} (timeouts {}, lost {}, verify {}; {} {})",
            s.errors,
            s.timeouts,
            s.lost,
            s.verify_failures,
            if self.churn {
                "connect failures"
            } else {
                "reconnects"
            },
            if self.churn {
                s.connect_failures
            } else {
                s.reconnects
            }
        )?;
        if let Some(lag) = &self.send_lag {
            writeln!(
                f,
                "send lag  µs  p50 {}  p90 {}  p99 {}  max {} (the sender's own lateness, in the latency)",
                lag.p50, lag.p90, lag.p99, lag.max
            )?;
        }
        if let Some(check) = &self.check {
            writeln!(f, "check     {}", check.summary())?;
            for example in &check.tally.examples {
                writeln!(f, "          {example}")?;
            }
        }
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
