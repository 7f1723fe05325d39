//! The dashboard's hot-keys panel: the cache's heaviest keys now, by
//! operations and by bytes ([`crate::analytics::ops::hot_keys`]).
//!
//! Keys are the owner's own data, shown to the owner: as the nodes escape
//! them (`admin_view::escape_key`: any byte outside printable ASCII as
//! `\xNN`), then HTML-escaped here, so a key can never be markup.

use std::fmt::Write;

use super::format::{esc, human_bytes};
use crate::analytics::ops::{HotKey, HotKeys};

/// Keys listed of each kind on the page.
pub const LISTED: usize = 10;

/// The panel; `hot` is None when no node hosts the cache.
pub fn section(out: &mut String, hot: &HotKeys) {
    out.push_str("<section id=\"hot-keys\"><h2>Hot keys</h2>");
    if hot.servers.is_empty() {
        out.push_str("<p class=\"note\">No node hosts this cache.</p></section>");
        return;
    }
    if hot.warming_up() {
        out.push_str(
            "<p class=\"note\" id=\"hot-keys-note\" data-state=\"warming\">Counting started \
             just now: the keys that take this cache's traffic show within 10 seconds of \
             traffic. Reload the page to see them.</p></section>",
        );
        return;
    }
    let seconds = hot
        .servers
        .iter()
        .map(|(_, v)| v.end_ms.saturating_sub(v.start_ms))
        .max()
        .unwrap_or(0)
        / 1000;
    let _ = write!(
        out,
        "<p>The keys with the most operations and the most bytes read and written over \
         the last {seconds} s ({} operations, {} in all; sampled at high rates, so the \
         figures are estimates).</p><div class=\"hot-keys\">",
        hot.ops,
        esc(&human_bytes(hot.bytes)),
    );
    table(out, "hot-ops", "By operations", &hot.by_ops, |k| {
        (k.count.to_string(), format!("{:.1}%", k.share * 100.0))
    });
    table(out, "hot-bytes", "By bytes", &hot.by_bytes, |k| {
        (human_bytes(k.count), format!("{:.1}%", k.share * 100.0))
    });
    out.push_str("</div></section>");
}

fn table(
    out: &mut String,
    id: &str,
    caption: &str,
    keys: &[HotKey],
    shown: impl Fn(&HotKey) -> (String, String),
) {
    let _ = write!(
        out,
        "<table id=\"{id}\"><caption>{caption}</caption>\
         <thead><tr><th scope=\"col\">Key</th><th scope=\"col\">Count</th>\
         <th scope=\"col\">Share</th></tr></thead><tbody>"
    );
    for k in keys.iter().take(LISTED) {
        let (count, share) = shown(k);
        let _ = write!(
            out,
            "<tr data-count=\"{}\"><td><code class=\"key\">{}</code></td><td>{}</td>\
             <td>{}</td></tr>",
            k.count,
            esc(&k.key),
            esc(&count),
            esc(&share),
        );
    }
    out.push_str("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_view::HotKeysView;

    fn view(ops: u64) -> HotKeysView {
        HotKeysView {
            keys: "plain".into(),
            since: 1,
            start_ms: 1_000,
            end_ms: 8_000,
            sample_rate: 1.0,
            ops,
            bytes: ops * 10,
            by_ops: Vec::new(),
            by_bytes: Vec::new(),
        }
    }

    #[test]
    fn warming_up_then_keys_escaped() {
        let mut hot = HotKeys {
            servers: vec![("n1".into(), view(0))],
            ..HotKeys::default()
        };
        let mut out = String::new();
        section(&mut out, &hot);
        assert!(out.contains("data-state=\"warming\""), "{out}");

        hot.servers = vec![("n1".into(), view(100))];
        hot.ops = 100;
        hot.by_ops = vec![HotKey {
            key: "<b>\"x\"\\x00".into(),
            count: 40,
            error: 0,
            share: 0.4,
            server: "n1".into(),
        }];
        let mut out = String::new();
        section(&mut out, &hot);
        assert!(out.contains("last 7 s"), "{out}");
        assert!(
            out.contains("<code class=\"key\">&lt;b&gt;&quot;x&quot;\\x00</code>"),
            "{out}"
        );
        assert!(out.contains("<td>40.0%</td>"), "{out}");
        assert!(!out.contains("<b>"), "{out}");
    }
}
