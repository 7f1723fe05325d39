//! The dashboard's graphs: history rows → one series per metric (summed
//! over nodes) → an inline SVG line chart. Pure functions, so the page
//! renders the same graphs with or without JavaScript.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use serde_json::Value;

use super::format::{clock, esc, human_bytes};
use crate::analytics::history::Sample;
use crate::mrc::WhatIf;

/// A graphable series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    Usage,
    HitRate,
    Evictions,
    Connections,
    Items,
}

impl Series {
    pub const ALL: [Series; 5] = [
        Series::Usage,
        Series::HitRate,
        Series::Evictions,
        Series::Connections,
        Series::Items,
    ];

    /// The name used in URLs (`?a=usage&b=hit_rate`).
    pub fn key(self) -> &'static str {
        match self {
            Series::Usage => "usage",
            Series::HitRate => "hit_rate",
            Series::Evictions => "evictions",
            Series::Connections => "connections",
            Series::Items => "items",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Series::Usage => "Memory usage",
            Series::HitRate => "Hit rate",
            Series::Evictions => "New evictions",
            Series::Connections => "Live connections",
            Series::Items => "Items",
        }
    }

    pub fn parse(key: &str) -> Option<Series> {
        Series::ALL.into_iter().find(|s| s.key() == key)
    }

    /// A value as the graph labels it.
    pub fn format(self, v: f64) -> String {
        match self {
            Series::Usage => human_bytes(v.max(0.0) as u64),
            Series::HitRate => format!("{v:.1}%"),
            _ => format!("{}", v.round() as i64),
        }
    }
}

/// One point: unix milliseconds and a value.
pub type Point = (i64, f64);

fn stat(stats: &Value, name: &str) -> f64 {
    stats.get(name).and_then(Value::as_u64).unwrap_or(0) as f64
}

/// Growth of a counter since the node's previous sample; a node that
/// restarted (its counter went down) counts from zero.
fn delta(now: f64, before: Option<f64>) -> f64 {
    match before {
        Some(b) if now >= b => now - b,
        _ => now,
    }
}

/// The series over `rows` (oldest first), one point per sample time.
/// Gauges are summed over nodes; counters (hit rate, evictions) use each
/// node's growth since its previous sample, so a point describes its
/// interval rather than the node's whole life.
pub fn series(rows: &[Sample], which: Series) -> Vec<Point> {
    let mut by_time: BTreeMap<i64, Vec<&Sample>> = BTreeMap::new();
    for row in rows {
        by_time.entry(row.timestamp_ms).or_default().push(row);
    }
    let mut previous: HashMap<&str, &Value> = HashMap::new();
    let mut out = Vec::with_capacity(by_time.len());
    for (t, samples) in by_time {
        let (mut sum, mut hits, mut misses) = (0.0, 0.0, 0.0);
        for s in &samples {
            let before = previous.get(s.server.as_str()).copied();
            let grown = |name: &str| delta(stat(&s.stats, name), before.map(|b| stat(b, name)));
            match which {
                Series::Usage => sum += stat(&s.stats, "bytes"),
                Series::Connections => sum += stat(&s.stats, "curr_connections"),
                Series::Items => sum += stat(&s.stats, "curr_items"),
                Series::Evictions => sum += grown("evictions"),
                Series::HitRate => {
                    hits += grown("get_hits");
                    misses += grown("get_misses");
                }
            }
        }
        for s in samples {
            previous.insert(&s.server, &s.stats);
        }
        if which == Series::HitRate {
            sum = if hits + misses > 0.0 {
                100.0 * hits / (hits + misses)
            } else {
                0.0
            };
        }
        out.push((t, sum));
    }
    out
}

const W: f64 = 600.0;
const H: f64 = 200.0;
const LEFT: f64 = 8.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 24.0;

/// An inline SVG line chart of `points` (scaled to fit; styled by the
/// page's CSS through classes, so it needs no inline style).
pub fn svg(which: Series, points: &[Point]) -> String {
    let mut out = String::new();
    let title = esc(which.title());
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{title}\" \
         data-series=\"{}\" data-points=\"{}\" preserveAspectRatio=\"none\">",
        which.key(),
        points.len()
    );
    let _ = write!(
        out,
        "<rect class=\"frame\" x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\"/>",
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    let Some((&(t0, _), &(t1, last))) = points.first().zip(points.last()) else {
        return empty(out, "No history yet");
    };
    let max = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let min = points.iter().map(|p| p.1).fold(f64::MAX, f64::min);
    let (lo, hi) = if which == Series::HitRate {
        (0.0, 100.0)
    } else {
        (min.min(0.0), if max > min.min(0.0) { max } else { 1.0 })
    };
    let span_t = (t1 - t0).max(1) as f64;
    let x = |t: i64| {
        if points.len() == 1 {
            W / 2.0
        } else {
            LEFT + (t - t0) as f64 / span_t * (W - LEFT - RIGHT)
        }
    };
    let y = |v: f64| TOP + (1.0 - (v - lo) / (hi - lo)) * (H - TOP - BOTTOM);
    let coords: Vec<String> = points
        .iter()
        .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
        .collect();
    let _ = write!(
        out,
        "<polyline class=\"line\" points=\"{}\"/>",
        coords.join(" ")
    );
    if let Some(&(t, v)) = points.last() {
        let _ = write!(
            out,
            "<circle class=\"dot\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"/>",
            x(t),
            y(v)
        );
    }
    let long = t1 - t0 > 86_400_000;
    let _ = write!(
        out,
        "<text class=\"label\" x=\"{LEFT}\" y=\"14\">max {}</text>\
         <text class=\"label\" x=\"{}\" y=\"14\" text-anchor=\"end\">now {}</text>\
         <text class=\"label\" x=\"{LEFT}\" y=\"{}\">{}</text>\
         <text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{} UTC</text></svg>",
        esc(&which.format(hi)),
        W - RIGHT,
        esc(&which.format(last)),
        H - 6.0,
        clock(t0, long),
        W - RIGHT,
        H - 6.0,
        clock(t1, long),
    );
    out
}

/// The what-if curve as an inline SVG: predicted hit rate (0–100%)
/// against memory on a log scale, with the current limit marked. An
/// untrustworthy curve is not drawn: a handful of sampled keys would draw
/// a confident-looking line from noise.
pub fn what_if_svg(w: &WhatIf) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"chart\" id=\"what-if-chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"Predicted hit rate by memory size\" data-points=\"{}\" \
         preserveAspectRatio=\"none\">\
         <rect class=\"frame\" x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\"/>",
        if w.trustworthy { w.sizes.len() } else { 0 },
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    let (Some(&first), Some(&last)) = (w.sizes.first(), w.sizes.last()) else {
        return empty(out, "No curve yet");
    };
    if !w.trustworthy || w.limit == 0 || first == 0 || last <= first {
        return empty(out, "Not enough traffic yet");
    }
    let span = (last as f64 / first as f64).log2();
    let x = |size: u64| LEFT + (size as f64 / first as f64).log2() / span * (W - LEFT - RIGHT);
    let y = |rate: f64| TOP + (1.0 - rate) * (H - TOP - BOTTOM);
    let coords: Vec<String> = w
        .sizes
        .iter()
        .zip(&w.hit_rates)
        .map(|(&s, &r)| format!("{:.1},{:.1}", x(s), y(r)))
        .collect();
    let now = w.hit_rate_at(w.limit);
    let _ = write!(
        out,
        "<polyline class=\"line\" points=\"{}\"/>\
         <line class=\"limit\" x1=\"{lx:.1}\" x2=\"{lx:.1}\" y1=\"{TOP}\" y2=\"{}\"/>\
         <circle class=\"dot\" cx=\"{lx:.1}\" cy=\"{:.1}\" r=\"3\"/>\
         <text class=\"label\" x=\"{LEFT}\" y=\"14\">100%</text>\
         <text class=\"label\" x=\"{:.1}\" y=\"14\" text-anchor=\"middle\">limit {}</text>\
         <text class=\"label\" x=\"{LEFT}\" y=\"{}\">{}</text>\
         <text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text></svg>",
        coords.join(" "),
        H - BOTTOM,
        y(now),
        x(w.limit),
        esc(&human_bytes(w.limit)),
        H - 6.0,
        esc(&human_bytes(first)),
        W - RIGHT,
        H - 6.0,
        esc(&human_bytes(last)),
        lx = x(w.limit),
    );
    out
}

/// Close an empty chart with `text` in its middle.
fn empty(mut out: String, text: &str) -> String {
    let _ = write!(
        out,
        "<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text></svg>",
        W / 2.0,
        H / 2.0,
        esc(text)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(t: i64, server: &str, stats: Value) -> Sample {
        Sample {
            cache_id: "c".into(),
            server: server.into(),
            timestamp_ms: t,
            stats,
        }
    }

    #[test]
    fn series_sum_gauges_and_difference_counters_per_node() {
        // (time, node, bytes, get_hits, get_misses, evictions); at time 2,
        // b has restarted: its counters went down, so they count from zero.
        let rows = [
            (1, "a", 10, 1, 1, 5),
            (1, "b", 5, 0, 0, 0),
            (2, "a", 20, 4, 1, 7),
            (2, "b", 1, 3, 0, 1),
        ]
        .map(|(t, node, bytes, hits, misses, evictions)| {
            let stats = json!({"bytes": bytes, "get_hits": hits, "get_misses": misses, "evictions": evictions});
            row(t, node, stats)
        });
        assert_eq!(series(&rows, Series::Usage), [(1, 15.0), (2, 21.0)]);
        assert_eq!(series(&rows, Series::Evictions), [(1, 5.0), (2, 3.0)]);
        // First interval: 1 of 2; second: (3 + 3) hits of 6 gets.
        assert_eq!(series(&rows, Series::HitRate), [(1, 50.0), (2, 100.0)]);
        assert!(series(&[], Series::Items).is_empty());
    }

    #[test]
    fn what_if_draws_a_trusted_curve_with_the_limit_marked() {
        let mut w = WhatIf {
            limit: 1 << 20,
            sizes: vec![1 << 19, 1 << 20, 1 << 21],
            hit_rates: vec![0.5, 0.8, 0.9],
            trustworthy: true,
            ..WhatIf::default()
        };
        let drawn = what_if_svg(&w);
        assert!(drawn.contains("<polyline") && drawn.contains("class=\"limit\""));
        assert!(drawn.contains("data-points=\"3\"") && drawn.contains("limit 1.0 MiB"));
        w.trustworthy = false;
        let hidden = what_if_svg(&w);
        assert!(hidden.contains("Not enough traffic yet") && !hidden.contains("<polyline"));
    }

    #[test]
    fn svg_draws_points_and_escapes_nothing_unsafe() {
        let empty = svg(Series::Usage, &[]);
        assert!(empty.contains("No history yet") && empty.ends_with("</svg>"));
        let drawn = svg(Series::HitRate, &[(0, 50.0), (60_000, 75.0)]);
        assert!(drawn.contains("<polyline") && drawn.contains("data-points=\"2\""));
        assert!(drawn.contains("now 75.0%") && drawn.contains("00:01 UTC"));
        assert_eq!(clock(86_400_000 * 365 + 3_600_000, true), "01-01 01:00");
    }
}
