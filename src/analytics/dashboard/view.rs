//! The dashboard's HTML, rendered on the server so every number is there
//! without JavaScript. Everything that came from a node or a user is
//! escaped with [`esc`]; usernames in URLs go through [`url_segment`].

use std::fmt::Write;

use serde_json::{Map, Value};

use super::format::{esc, human_bytes, url_segment};
use super::graph::{self, Series};
use crate::admin_view::{CacheView, LoginView};
use crate::analytics::history::Sample;
use crate::analytics::ops::HotKeys;
use crate::mrc::{WhatIf, MIN_SAMPLED_ACCESSES};

fn stat(stats: &Value, name: &str) -> u64 {
    stats.get(name).and_then(Value::as_u64).unwrap_or(0)
}

/// The figures of one node, or of all nodes summed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    pub bytes: u64,
    pub limit: u64,
    pub curr_connections: u64,
    pub total_connections: u64,
    pub items: u64,
    pub evictions: u64,
    pub get_hits: u64,
    pub get_misses: u64,
    pub cmd_set: u64,
    pub cmd_flush: u64,
}

impl Figures {
    pub fn of(stats: &Value) -> Figures {
        Figures {
            bytes: stat(stats, "bytes"),
            limit: stat(stats, "limit_maxbytes"),
            curr_connections: stat(stats, "curr_connections"),
            total_connections: stat(stats, "total_connections"),
            items: stat(stats, "curr_items"),
            evictions: stat(stats, "evictions"),
            get_hits: stat(stats, "get_hits"),
            get_misses: stat(stats, "get_misses"),
            cmd_set: stat(stats, "cmd_set"),
            cmd_flush: stat(stats, "cmd_flush"),
        }
    }

    fn add(mut self, o: Figures) -> Figures {
        self.bytes += o.bytes;
        self.limit += o.limit;
        self.curr_connections += o.curr_connections;
        self.total_connections += o.total_connections;
        self.items += o.items;
        self.evictions += o.evictions;
        self.get_hits += o.get_hits;
        self.get_misses += o.get_misses;
        self.cmd_set += o.cmd_set;
        self.cmd_flush += o.cmd_flush;
        self
    }

    /// Hits as a percentage of gets; None before the first get.
    pub fn hit_rate(&self) -> Option<f64> {
        let gets = self.get_hits + self.get_misses;
        (gets > 0).then(|| 100.0 * self.get_hits as f64 / gets as f64)
    }
}

/// Every node's figures summed.
pub fn totals(stats: &Map<String, Value>) -> Figures {
    stats
        .values()
        .map(Figures::of)
        .fold(Figures::default(), Figures::add)
}

/// Evictions since the latest history sample (all of them before the
/// first sample). A node that restarted since counts from zero.
pub fn new_evictions(stats: &Map<String, Value>, history: &[Sample]) -> u64 {
    let last = history.iter().map(|s| s.timestamp_ms).max();
    stats
        .iter()
        .map(|(node, now)| {
            let now = stat(now, "evictions");
            let then = history
                .iter()
                .filter(|s| Some(s.timestamp_ms) == last && &s.server == node)
                .map(|s| stat(&s.stats, "evictions"))
                .next();
            match then {
                Some(t) if t <= now => now - t,
                _ => now,
            }
        })
        .sum()
}

/// Everything one dashboard page shows.
pub struct Page<'a> {
    pub cache: &'a CacheView,
    pub caller: &'a LoginView,
    pub stats: &'a Map<String, Value>,
    pub history: &'a [Sample],
    /// The cache's what-if curve over its nodes; None when no node tracks it.
    pub what_if: Option<&'a WhatIf>,
    /// The nodes that host the cache with what-if tracking off.
    pub what_if_off: &'a [String],
    pub hot_keys: &'a HotKeys,
    pub graphs: [Series; 2],
    pub csrf: &'a str,
    /// A fixed message about what was just done.
    pub notice: Option<&'a str>,
    /// A credential just created: username and password, shown once.
    pub created: Option<(&'a str, &'a str)>,
    /// Nodes that have not applied every change yet.
    pub pending: Vec<String>,
}

/// The document around `body`.
pub fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · memgate analytics</title>\
         <link rel=\"stylesheet\" href=\"/assets/dashboard.css\">\
         <script src=\"/assets/dashboard.js\" defer></script></head>\
         <body>{body}</body></html>\n",
        esc(title)
    )
}

fn header(cache_id: &str, caller: Option<&LoginView>) -> String {
    let who = caller.map_or(String::new(), |c| {
        format!(" · signed in as <code>{}</code>", esc(&c.username))
    });
    format!(
        "<header><h1><a href=\"/caches/{}\">memgate analytics</a></h1>\
         <p>Cache <code id=\"cache-id\">{}</code>{who}</p></header>",
        url_segment(cache_id),
        esc(cache_id)
    )
}

fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(token)
    )
}

/// A card with one big figure: `name` keys `data-stat`, `value` the raw
/// number (for tests and scripts), `shown` the text.
fn figure(name: &str, value: impl std::fmt::Display, shown: &str) -> String {
    format!(
        "<span class=\"big\" data-stat=\"{name}\" data-value=\"{value}\">{}</span>",
        esc(shown)
    )
}

fn small(name: &str, value: impl std::fmt::Display, shown: &str) -> String {
    format!(
        "<span data-stat=\"{name}\" data-value=\"{value}\">{}</span>",
        esc(shown)
    )
}

fn rate_text(rate: Option<f64>) -> (String, String) {
    match rate {
        Some(r) => (format!("{r:.2}"), format!("{r:.1}%")),
        None => ("".into(), "–".into()),
    }
}

fn panels(out: &mut String, page: &Page<'_>) {
    let t = totals(page.stats);
    let fresh = new_evictions(page.stats, page.history);
    let (rate_value, rate_shown) = rate_text(t.hit_rate());
    let _ = write!(
        out,
        "<section class=\"panels\" id=\"panels\" aria-label=\"Totals over all nodes\">\
         <div class=\"card\"><h2>Usage</h2>{}\
         <meter min=\"0\" max=\"{}\" value=\"{}\"></meter><p>of {} limit</p></div>\
         <div class=\"card\"><h2>Connections</h2>{}<p>live · {} total</p></div>\
         <div class=\"card\"><h2>Items</h2>{}<p>stored now</p></div>\
         <div class=\"card\"><h2>Evictions</h2>{}<p>{} new since the last sample</p></div>\
         <div class=\"card\"><h2>Hit rate</h2>{}<p>{} hits · {} misses</p></div>\
         <div class=\"card\"><h2>Commands</h2>{}<p>sets · {} flushes</p></div>\
         </section>",
        figure("bytes", t.bytes, &human_bytes(t.bytes)),
        t.limit.max(1),
        t.bytes,
        small("limit_maxbytes", t.limit, &human_bytes(t.limit)),
        figure(
            "curr_connections",
            t.curr_connections,
            &t.curr_connections.to_string()
        ),
        small(
            "total_connections",
            t.total_connections,
            &t.total_connections.to_string()
        ),
        figure("curr_items", t.items, &t.items.to_string()),
        figure("evictions", t.evictions, &t.evictions.to_string()),
        small("new_evictions", fresh, &fresh.to_string()),
        figure("hit_rate", rate_value, &rate_shown),
        small("get_hits", t.get_hits, &t.get_hits.to_string()),
        small("get_misses", t.get_misses, &t.get_misses.to_string()),
        figure("cmd_set", t.cmd_set, &t.cmd_set.to_string()),
        small("cmd_flush", t.cmd_flush, &t.cmd_flush.to_string()),
    );
}

/// A multiple of the limit as the what-if lines say it.
fn times(m: f64) -> String {
    if m == 0.5 {
        "½×".into()
    } else {
        format!("{m}×")
    }
}

/// The what-if panel: the curve, the hit rate at other sizes, and a note
/// instead when the sample is too small to trust; when nodes of the cache
/// run with tracking off (`off`), a note that says so, in place of the
/// curve when no node tracks it.
fn what_if(out: &mut String, w: Option<&WhatIf>, off: &[String]) {
    let Some(w) = w else {
        if !off.is_empty() {
            out.push_str(
                "<section id=\"what-if\" data-tracking=\"off\"><h2>What if</h2>\
                 <p class=\"note\" id=\"what-if-off\">What-if tracking is off on this \
                 cache's nodes (<code>memgate node --what-if off</code>), so there is no \
                 prediction of its hit rate at other memory sizes.</p></section>",
            );
        }
        return;
    };
    let now = w.hit_rate_at(w.limit) * 100.0;
    let _ = write!(
        out,
        "<section id=\"what-if\" data-trustworthy=\"{}\"><h2>What if</h2>\
         <p>The hit rate this cache would have with more or less memory, predicted from \
         the last {} of traffic ({} reads, {} keys sampled).</p>\
         <figure><figcaption>Predicted hit rate by memory</figcaption>{}</figure>",
        w.trustworthy,
        esc(&minutes(w.window_seconds)),
        w.accesses_total,
        w.sampled_keys,
        graph::what_if_svg(w)
    );
    if w.trustworthy {
        out.push_str("<ul class=\"what-if-lines\">");
        for m in [0.5, 2.0, 4.0] {
            let rate = w.hit_rate_at((w.limit as f64 * m).round() as u64) * 100.0;
            let _ = write!(
                out,
                "<li data-multiple=\"{m}\" data-value=\"{rate:.2}\">at {} memory ({}): \
                 {rate:.1}% hits (now {now:.1}%)</li>",
                times(m),
                esc(&human_bytes((w.limit as f64 * m).round() as u64)),
            );
        }
        out.push_str("</ul>");
    } else {
        let _ = write!(
            out,
            "<p class=\"note\" id=\"what-if-note\">Not enough traffic yet to predict: \
             {} sampled reads of the {MIN_SAMPLED_ACCESSES} needed. The curve appears \
             once the cache has seen more gets.</p>",
            w.sampled_accesses
        );
    }
    if !off.is_empty() {
        let _ = write!(
            out,
            "<p class=\"note\" id=\"what-if-partial\">What-if tracking is off on {}: \
             the curve and its sizes cover only this cache's share on the other nodes.</p>",
            esc(&off.join(", "))
        );
    }
    out.push_str("</section>");
}

/// `90 s`, `12 min`, `3 h` for a window.
fn minutes(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        _ => format!("{} h", secs / 3600),
    }
}

/// The graphs section: two series picked with two selects (a GET form
/// that works without JavaScript; the script swaps the section in place).
pub fn graphs(cache_id: &str, history: &[Sample], picked: [Series; 2]) -> String {
    let mut out = format!(
        "<section id=\"graphs\"><h2>History</h2>\
         <form class=\"pick\" method=\"get\" action=\"/caches/{}\">",
        url_segment(cache_id)
    );
    for (name, chosen) in [("a", picked[0]), ("b", picked[1])] {
        let _ = write!(
            out,
            "<label>Graph {} <select name=\"{name}\" id=\"graph-{name}\">",
            if name == "a" { 1 } else { 2 }
        );
        for s in Series::ALL {
            let _ = write!(
                out,
                "<option value=\"{}\"{}>{}</option>",
                s.key(),
                if s == chosen { " selected" } else { "" },
                s.title()
            );
        }
        out.push_str("</select></label>");
    }
    out.push_str(
        "<button type=\"submit\" class=\"nojs\">Show</button></form><div class=\"charts\">",
    );
    for s in picked {
        let _ = write!(
            out,
            "<figure><figcaption>{}</figcaption>{}</figure>",
            s.title(),
            graph::svg(s, &graph::series(history, s))
        );
    }
    out.push_str("</div></section>");
    out
}

fn nodes(out: &mut String, stats: &Map<String, Value>) {
    out.push_str(
        "<section id=\"nodes\"><h2>Nodes</h2><div class=\"scroll\"><table>\
         <thead><tr><th>Node</th><th>Usage</th><th>Items</th><th>Connections</th>\
         <th>Evictions</th><th>Hit rate</th><th>Sets</th><th>Flushes</th></tr></thead><tbody>",
    );
    for (label, value) in stats {
        let f = Figures::of(value);
        let (rate_value, rate_shown) = rate_text(f.hit_rate());
        let _ = write!(
            out,
            "<tr data-node=\"{}\"><th scope=\"row\"><code>{}</code></th>\
             <td>{} / {}</td><td>{}</td><td>{} ({} total)</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(label),
            esc(label),
            small("bytes", f.bytes, &human_bytes(f.bytes)),
            small("limit_maxbytes", f.limit, &human_bytes(f.limit)),
            small("curr_items", f.items, &f.items.to_string()),
            small("curr_connections", f.curr_connections, &f.curr_connections.to_string()),
            small("total_connections", f.total_connections, &f.total_connections.to_string()),
            small("evictions", f.evictions, &f.evictions.to_string()),
            small("hit_rate", rate_value, &rate_shown),
            small("cmd_set", f.cmd_set, &f.cmd_set.to_string()),
            small("cmd_flush", f.cmd_flush, &f.cmd_flush.to_string()),
        );
    }
    if stats.is_empty() {
        out.push_str("<tr><td colspan=\"8\">No node hosts this cache.</td></tr>");
    }
    out.push_str("</tbody></table></div></section>");
}

fn check(name: &str, label: &str, on: bool) -> String {
    format!(
        "<label><input type=\"checkbox\" name=\"{name}\" value=\"on\"{}> {label}</label>",
        if on { " checked" } else { "" }
    )
}

fn credentials(out: &mut String, page: &Page<'_>) {
    let base = format!("/caches/{}", url_segment(&page.cache.id));
    let csrf = csrf_field(page.csrf);
    out.push_str("<section id=\"credentials\"><h2>Credentials</h2>");
    if let Some((user, pass)) = page.created {
        let _ = write!(
            out,
            "<div class=\"created\" role=\"status\"><p>New credential created. Copy the password now: \
             it is not shown again.</p><dl><dt>Username</dt><dd><code id=\"new-username\">{}</code></dd>\
             <dt>Password</dt><dd><code id=\"new-password\">{}</code></dd></dl></div>",
            esc(user),
            esc(pass)
        );
    }
    out.push_str(
        "<div class=\"scroll\"><table><thead><tr><th>Username</th><th>Capabilities</th>\
         <th>Actions</th></tr></thead><tbody>",
    );
    for c in &page.cache.credentials {
        let path = format!("{base}/credentials/{}", url_segment(&c.username));
        let _ = write!(
            out,
            "<tr data-username=\"{u}\"><th scope=\"row\"><code>{u}</code>{badge}</th>\
             <td><form class=\"caps\" method=\"post\" action=\"{path}/capabilities\">{csrf}{}{}{}\
             <button type=\"submit\">Save</button></form></td><td class=\"actions\">",
            check("write", "write", c.write),
            check("flush", "flush", c.flush),
            check("api", "api", c.api),
            u = esc(&c.username),
            badge = if c.primary {
                " <span class=\"badge\">primary</span>"
            } else {
                ""
            },
        );
        if !c.primary {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"{path}/promote\">{csrf}\
                 <button type=\"submit\">Make primary</button></form>\
                 <form class=\"delete\" method=\"post\" action=\"{path}/delete\" data-username=\"{}\">{csrf}\
                 <button type=\"submit\" class=\"danger\">Delete</button></form>",
                esc(&c.username)
            );
        }
        out.push_str("</td></tr>");
    }
    let _ = write!(
        out,
        "</tbody></table></div><form method=\"post\" action=\"{base}/credentials\" id=\"create\">{csrf}\
         <button type=\"submit\">Create credential</button></form></section>"
    );
}

fn settings(out: &mut String, page: &Page<'_>) {
    let base = format!("/caches/{}", url_segment(&page.cache.id));
    let csrf = csrf_field(page.csrf);
    out.push_str("<section id=\"settings\"><h2>Settings</h2>");
    if page.cache.disabled {
        let _ = write!(
            out,
            "<p id=\"state\" data-disabled=\"true\">This cache is <strong>disabled</strong>: \
             memcached logins fail until it is enabled.</p>\
             <form method=\"post\" action=\"{base}/enable\" id=\"enable\">{csrf}\
             <button type=\"submit\">Enable cache</button></form>"
        );
    } else {
        out.push_str("<p id=\"state\" data-disabled=\"false\">This cache is enabled.</p>");
    }
    if page.caller.flush {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"{base}/flush\" id=\"flush\">{csrf}\
             <button type=\"submit\" class=\"danger\">Flush cache…</button></form>"
        );
    } else {
        out.push_str("<p>Your credential may not flush this cache.</p>");
    }
    out.push_str("</section>");
}

/// The whole dashboard.
pub fn page(page: &Page<'_>) -> String {
    let mut body = header(&page.cache.id, Some(page.caller));
    body.push_str("<main>");
    if let Some(notice) = page.notice {
        let _ = write!(
            body,
            "<p class=\"notice\" role=\"status\" id=\"notice\">{}</p>",
            esc(notice)
        );
    }
    if page.cache.disabled {
        body.push_str(
            "<p class=\"warning\" id=\"disabled\">Disabled: this cache saw no logins and no \
             commands for too long. Enable it under Settings.</p>",
        );
    }
    if !page.pending.is_empty() {
        let _ = write!(
            body,
            "<p class=\"warning\">Not applied yet on: {} (they get the changes when they are back).</p>",
            esc(&page.pending.join(", "))
        );
    }
    panels(&mut body, page);
    body.push_str(&graphs(&page.cache.id, page.history, page.graphs));
    what_if(&mut body, page.what_if, page.what_if_off);
    super::hot_keys::section(&mut body, page.hot_keys);
    nodes(&mut body, page.stats);
    credentials(&mut body, page);
    settings(&mut body, page);
    body.push_str("</main>");
    document(&format!("Cache {}", page.cache.id), &body)
}

/// The flush confirmation: a second form that says `confirm=yes`.
pub fn confirm_flush(cache_id: &str, csrf: &str) -> String {
    let base = format!("/caches/{}", url_segment(cache_id));
    let body = format!(
        "{}<main><section id=\"confirm\"><h2>Flush the cache?</h2>\
         <p>Every item of cache <code>{}</code> is removed, on every node. This cannot be undone.</p>\
         <form method=\"post\" action=\"{base}/flush\">{}\
         <input type=\"hidden\" name=\"confirm\" value=\"yes\">\
         <button type=\"submit\" class=\"danger\" id=\"confirm-flush\">Yes, flush it</button> \
         <a href=\"{base}\">Cancel</a></form></section></main>",
        header(cache_id, None),
        esc(cache_id),
        csrf_field(csrf)
    );
    document("Flush the cache?", &body)
}

/// An error page with the API's message.
pub fn error_page(status: u16, message: &str) -> String {
    let body = format!(
        "<main><section><h2>Error {status}</h2><p id=\"error\">{}</p></section></main>",
        esc(message)
    );
    document("Error", &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn totals_and_new_evictions() {
        let mut stats = Map::new();
        stats.insert(
            "a".into(),
            json!({"bytes": 10, "evictions": 7, "get_hits": 3, "get_misses": 1}),
        );
        stats.insert("b".into(), json!({"bytes": 5, "evictions": 2}));
        let t = totals(&stats);
        assert_eq!((t.bytes, t.evictions), (15, 9));
        assert_eq!(t.hit_rate(), Some(75.0));
        assert_eq!(Figures::default().hit_rate(), None);
        let sample = |t, server: &str, ev| Sample {
            cache_id: "c".into(),
            server: server.into(),
            timestamp_ms: t,
            stats: json!({ "evictions": ev }),
        };
        assert_eq!(new_evictions(&stats, &[]), 9);
        // Only the latest sample counts; b restarted (5 > 2) so all its 2 are new.
        let history = [sample(1, "a", 1), sample(2, "a", 4), sample(2, "b", 5)];
        assert_eq!(new_evictions(&stats, &history), 3 + 2);
    }

    #[test]
    fn what_if_says_when_tracking_is_off() {
        let off = ["n2:11211".to_string()];
        let mut page = String::new();
        what_if(&mut page, None, &[]);
        assert!(page.is_empty(), "{page}");
        what_if(&mut page, None, &off);
        assert!(page.contains("id=\"what-if-off\"") && page.contains("tracking is off"));
        assert!(
            !page.contains("<svg") && !page.contains("what-if-note"),
            "{page}"
        );
        let w = WhatIf {
            limit: 1 << 20,
            sizes: vec![1 << 19, 1 << 20, 1 << 21],
            hit_rates: vec![0.5, 0.8, 0.9],
            trustworthy: true,
            ..WhatIf::default()
        };
        let mut page = String::new();
        what_if(&mut page, Some(&w), &[]);
        assert!(
            page.contains("<svg") && !page.contains("tracking is off"),
            "{page}"
        );
        let mut page = String::new();
        what_if(&mut page, Some(&w), &off);
        assert!(page.contains("<svg") && page.contains("id=\"what-if-partial\""));
        assert!(page.contains("tracking is off on n2:11211"), "{page}");
    }
}
