//! The documentation's own checks: every relative link in the manuals
//! resolves, the README stays a five-minute read, and nothing the old
//! README documented was lost when it was split into `docs/`.
//!
//! A renamed heading or a moved file breaks a link silently on GitHub; this
//! test makes it break `cargo test` instead. It reads only files, with std
//! alone, so it costs nothing to run.

use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The README is the entry point, and the manuals in `docs/` hold the rest:
/// past this it is a manual again.
const README_MAX_BYTES: usize = 12 * 1024;

/// Every flag, environment variable, metric and API route that README.md
/// documented before it was split into `docs/` (commit 8caa90b), taken from
/// it mechanically. Each must still appear in README.md or docs/*.md, as a
/// whole name (`--tls` is not found inside `--tls-port`).
const DOCUMENTED: &[&str] = &[
    // flags of every role, and of benches/compare.sh and cargo
    "--admin-ca",
    "--admin-listen",
    "--admin-token",
    "--allow-remote",
    "--auth-timeout",
    "--busy-poll",
    "--ca",
    "--caches",
    "--cert",
    "--churn-levels",
    "--client",
    "--client-cert",
    "--client-key",
    "--config",
    "--connections",
    "--connections-per-node",
    "--db",
    "--dir",
    "--disable-after",
    "--down-retry-delay",
    "--drain-timeout",
    "--duration",
    "--failover",
    "--failure-limit",
    "--force",
    "--insecure-no-auth",
    "--json",
    "--keepalive",
    "--key",
    "--key-pattern",
    "--key-space",
    "--levels",
    "--listen",
    "--max-connections",
    "--max-item-size",
    "--memgate",
    "--memory-limit",
    "--metrics-listen",
    "--node",
    "--nodes",
    "--out",
    "--password",
    "--pipeline",
    "--prefill",
    "--protocol",
    "--rate",
    "--ratio",
    "--release",
    "--repeats",
    "--requests",
    "--retention",
    "--rounds",
    "--sample-interval",
    "--server",
    "--server-name",
    "--servers",
    "--smoke",
    "--threads",
    "--timeout",
    "--tls",
    "--tls-listen",
    "--tls-port",
    "--upstream-protocol",
    "--username",
    "--value-size",
    "--verify",
    "--what-if",
    "--zipf-exponent",
    // environment
    "MEMCACHE_*",
    "MEMCACHE_SERVERS",
    "MEMCACHIER_*",
    "MEMCACHIER_SERVERS",
    "MEMCACHIER_USERNAME",
    "MEMGATE_ANALYTICS_<FLAG>",
    "MEMGATE_BENCH_PASSWORD",
    "MEMGATE_LOG",
    "MEMGATE_NODE_<FLAG>",
    "MEMGATE_NODE_ADMIN_LISTEN",
    "MEMGATE_NODE_ADMIN_TOKEN",
    "MEMGATE_NODE_MEMORY_LIMIT",
    "MEMGATE_NODE_WHAT_IF",
    "MEMGATE_PROXY_<FLAG>",
    // the caches file's keys that are not plain words
    "memory_limit",
    "password_hash",
    // metrics
    "memgate_analytics_caches_disabled_total",
    "memgate_analytics_node_errors_total",
    "memgate_analytics_pending_changes",
    "memgate_analytics_request_duration_seconds",
    "memgate_analytics_requests_total",
    "memgate_analytics_samples_total",
    "memgate_node_auth_failures_total",
    "memgate_node_auth_throttled_total",
    "memgate_node_cache_commands_total",
    "memgate_node_cache_connections",
    "memgate_node_cache_evictions_total",
    "memgate_node_cache_expired_total",
    "memgate_node_cache_items",
    "memgate_node_cache_limit_bytes",
    "memgate_node_cache_read_bytes_total",
    "memgate_node_cache_used_bytes",
    "memgate_node_cache_written_bytes_total",
    "memgate_node_connection_errors_total",
    "memgate_node_connections_total",
    "memgate_node_open_connections",
    "memgate_node_refused_connections_total",
    "memgate_proxy_busy_poll_microseconds_total",
    "memgate_proxy_client_connections",
    "memgate_proxy_client_connections_total",
    "memgate_proxy_client_read_bytes_total",
    "memgate_proxy_client_written_bytes_total",
    "memgate_proxy_multiget_unreachable_keys_total",
    "memgate_proxy_node_up",
    "memgate_proxy_request_duration_seconds",
    "memgate_proxy_requests_total",
    "memgate_proxy_sasl_failures_total",
    "memgate_proxy_tls_failures_total",
    "memgate_proxy_upstream_connections",
    "memgate_proxy_upstream_connects_total",
    "memgate_proxy_upstream_duration_seconds",
    "memgate_proxy_upstream_errors_total",
    "memgate_proxy_upstream_requests_total",
    // HTTP routes: analytics, the node's admin API, the metrics listener
    "/api/login",
    "/api/v1/login",
    "/api/v1/<cache_id>/credentials",
    "/api/v1/<cache_id>/credentials/<cred_id>",
    "/api/v1/<cache_id>/credentials/primary/<cred_id>",
    "/api/v1/<cache_id>/enable",
    "/api/v1/<cache_id>/flush",
    "/api/v1/<cache_id>/history",
    "/api/v1/<cache_id>/stats",
    "/api/v1/<cache_id>/whatif",
    "/admin/caches",
    "/admin/caches/<id>/credentials",
    "/admin/caches/<id>/disabled",
    "/admin/caches/<id>/flush",
    "/admin/caches/<id>/stats",
    "/admin/caches/<id>/whatif",
    "/admin/login",
    "/caches/<cache_id>",
    "/metrics",
    "/healthz",
    "/readyz",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The markdown files whose links must resolve: the README, the manuals,
/// the benchmark reports and the deploy and PKI notes.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    for dir in ["docs", "benches", "deploy", "certs"] {
        collect_markdown(&root.join(dir), &mut files);
    }
    files.sort();
    files
}

fn collect_markdown(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("read a directory entry").path();
        if path.is_dir() {
            collect_markdown(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

/// A line's text with inline code spans removed, so that `[a](b)` written as
/// an example inside backticks is not taken for a link, while a link whose
/// text is code (`` [`x`](y) ``) still is.
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let fence = &rest[start..start + ticks];
        let after = &rest[start + ticks..];
        match after.find(fence) {
            Some(end) => rest = &after[end + ticks..],
            // An unmatched backtick is a literal backtick.
            None => {
                out.push_str(fence);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The lines of a markdown file outside fenced code blocks, with their
/// numbers (1-based).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(open), Some(m)) if open == m => fence = None,
            (None, None) => lines.push((i + 1, line)),
            _ => {}
        }
    }
    lines
}

/// Every link target in a markdown text, with its line: inline links and
/// images `[text](target "title")` and reference definitions
/// `[label]: target`.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut targets = Vec::new();
    for (number, line) in prose_lines(text) {
        let line = without_code_spans(line);
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if let Some(close) = trimmed.find("]:") {
                let target = trimmed[close + 2..].split_whitespace().next();
                if let Some(target) = target {
                    targets.push((number, unwrap_angle(target).to_string()));
                }
                continue;
            }
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = closing_paren(after);
            let inside = after[..end].trim();
            let target = if let Some(angled) = inside.strip_prefix('<') {
                angled.split('>').next().unwrap_or("")
            } else {
                inside.split_whitespace().next().unwrap_or("")
            };
            targets.push((number, target.to_string()));
            rest = &after[end..];
        }
    }
    targets
}

/// Where the parenthesis that closes a link target is, allowing balanced
/// parentheses inside it as CommonMark does.
fn closing_paren(s: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return i,
            ')' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

fn unwrap_angle(target: &str) -> &str {
    target
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(target)
}

/// `%20` and friends, as a browser would decode them in a path.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(byte) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// GitHub's anchor for a heading: the rendered text lowercased, every
/// character that is not a letter, a digit, a space, `-` or `_` dropped,
/// and spaces turned into `-`.
fn slug(heading: &str) -> String {
    // A link in a heading renders as its text.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](") else {
            break;
        };
        let after = &rest[open + mid + 2..];
        let end = closing_paren(after);
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..open + mid]);
        rest = after.get(end + 1..).unwrap_or("");
    }
    text.push_str(rest);
    text.trim()
        .chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors a markdown text's headings get, with GitHub's `-1`, `-2`
/// suffixes for repeated ones.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim().trim_end_matches('#'));
        let count = seen.entry(base.clone()).or_insert(0);
        out.push(if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        });
        *count += 1;
    }
    out
}

/// `a/./b/../c` as `a/c`, without touching the file system, so that a
/// target outside the repository is seen for what it is.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The broken links of one markdown file (`file` is where it lives; `text`
/// its contents), as messages naming the file, line and target.
fn broken_links(root: &Path, file: &Path, text: &str) -> Vec<String> {
    let mut broken = Vec::new();
    let shown = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    for (line, target) in link_targets(text) {
        let lower = target.to_ascii_lowercase();
        if target.is_empty()
            || lower.starts_with("http://")
            || lower.starts_with("https://")
            || lower.starts_with("mailto:")
        {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let path = percent_decode(path);
        let resolved = if path.is_empty() {
            file.to_path_buf()
        } else if let Some(from_root) = path.strip_prefix('/') {
            root.join(from_root)
        } else {
            file.parent().expect("a file has a directory").join(&path)
        };
        let resolved = normalise(&resolved);
        if !resolved.starts_with(root) {
            broken.push(format!(
                "{shown}:{line}: {target} points outside the repository"
            ));
            continue;
        }
        if !path.is_empty() && !resolved.exists() {
            broken.push(format!("{shown}:{line}: {target} does not exist"));
            continue;
        }
        let Some(anchor) = anchor else { continue };
        if resolved.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let target_text = if resolved == file {
            text.to_string()
        } else {
            fs::read_to_string(&resolved).expect("read a linked markdown file")
        };
        let anchor = percent_decode(anchor);
        if !anchors(&target_text).contains(&anchor) {
            broken.push(format!(
                "{shown}:{line}: {target} names no heading of {}",
                resolved.strip_prefix(root).unwrap_or(&resolved).display()
            ));
        }
    }
    broken
}

#[test]
fn every_relative_link_resolves() {
    let root = root();
    let files = markdown_files(&root);
    assert!(
        files.len() > 5,
        "found only {files:?}: is the test looking in the right place?"
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = fs::read_to_string(file).expect("read a markdown file");
        checked += link_targets(&text).len();
        broken.extend(broken_links(&root, file, &text));
    }
    assert!(checked > 20, "found only {checked} links in {files:?}");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_stays_short() {
    let size = fs::metadata(root().join("README.md"))
        .expect("README.md exists")
        .len() as usize;
    assert!(
        size <= README_MAX_BYTES,
        "README.md is {size} bytes, over {README_MAX_BYTES}: move detail to a manual in docs/"
    );
}

/// Whether `name` occurs in `text` as a whole name: not followed by a
/// character that would make it a longer name (`-port`, `_total`).
fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        let next = text[at + name.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

#[test]
fn nothing_the_old_readme_documented_is_lost() {
    let root = root();
    let mut text = fs::read_to_string(root.join("README.md")).expect("read README.md");
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .map(|e| e.expect("read a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    for doc in &docs {
        text.push_str(&fs::read_to_string(doc).expect("read a manual"));
    }
    let lost: Vec<&str> = DOCUMENTED
        .iter()
        .copied()
        .filter(|name| !mentions(&text, name))
        .collect();
    assert!(
        lost.is_empty(),
        "documented before, in neither README.md nor docs/*.md now: {lost:?}"
    );
}

// The checker's own tests: it must be able to fail.

#[test]
fn a_missing_file_or_heading_is_reported() {
    let root = root();
    let file = root.join("docs").join("example.md");
    let text = "# Title\n\n## Two words\n\n\
        [ok](#two-words) [ok](../README.md) [web](https://example.com/x)\n\
        [gone](no-such-file.md) [bad anchor](#three-words)\n\
        [up and out](../../outside.md) `[in code](nowhere.md)`\n\
        ```\n[in a fence](nowhere.md)\n```\n";
    let broken = broken_links(&root, &file, text);
    assert_eq!(broken.len(), 3, "{broken:#?}");
    assert!(broken[0].contains("no-such-file.md does not exist"));
    assert!(broken[1].contains("#three-words names no heading"));
    assert!(broken[2].contains("outside the repository"));
}

#[test]
fn anchors_follow_githubs_slugs() {
    let text = "# memgate\n## The two commands\n## Disabled caches (`--disable-after`)\n\
        ## benches/compare.sh\n## Facts honoured\n## Facts honoured\n\
        ## The memcached `-Z` TLS-record flaw\n## A [linked](x.md) heading\n";
    assert_eq!(
        anchors(text),
        [
            "memgate",
            "the-two-commands",
            "disabled-caches---disable-after",
            "benchescomparesh",
            "facts-honoured",
            "facts-honoured-1",
            "the-memcached--z-tls-record-flaw",
            "a-linked-heading",
        ]
    );
}

#[test]
fn links_are_found_with_titles_references_and_code_text() {
    let text = "see [`a`](a.md \"title\") and ![img](b.png), [c](<c d.md>)\n\
        [ref]: e.md\n";
    let targets: Vec<String> = link_targets(text).into_iter().map(|(_, t)| t).collect();
    assert_eq!(targets, ["a.md", "b.png", "c d.md", "e.md"]);
}

#[test]
fn whole_names_only() {
    assert!(mentions("use `--tls` here", "--tls"));
    assert!(!mentions("use `--tls-port` here", "--tls"));
    assert!(!mentions(
        "memgate_proxy_node_up_total",
        "memgate_proxy_node_up"
    ));
}
