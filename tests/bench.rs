//! `memgate bench` against in-process nodes: both protocols, with and without
//! login, TLS, a fixed rate, errors and timeouts; and the real binary's JSON.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::process::{run, Exit, BIN};
use common::{start_node, two_caches};
use memgate::bench::keys::KeyPattern;
use memgate::bench::{self, BenchConfig, BenchError, Login, Protocol, Report, Stop, TlsTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(addr: SocketAddr, protocol: Protocol) -> BenchConfig {
    let mut c = BenchConfig::new(addr.to_string());
    c.protocol = protocol;
    c.connections = 2;
    c.pipeline = 4;
    c.key_space = 500;
    c.stop = Stop::After(Duration::from_secs(1));
    // The test machine is shared and slow; only the silent-server test
    // wants a reply to time out.
    c.timeout = Duration::from_secs(10);
    c
}

fn login(user: &str, pass: &str) -> Option<Login> {
    Some(Login {
        username: user.into(),
        password: pass.into(),
    })
}

/// The invariant every report must keep, checked field by field.
fn assert_counts_add_up(r: &Report) {
    let s = &r.stats;
    assert_eq!(r.ops(), s.hits + s.misses + s.sets + s.errors, "{r}");
    // Every request handed to a connection was accounted for exactly once,
    // including those in flight when a connection broke or the run ended.
    assert_eq!(s.sent, r.ops(), "{r}");
    assert!(s.errors >= s.timeouts + s.lost + s.verify_failures, "{r}");
    let json = r.to_json();
    let n = |k: &str| json[k].as_u64().unwrap();
    assert_eq!(n("ops"), n("hits") + n("misses") + n("sets") + n("errors"));
}

/// `stats` over a fresh text connection to a no-login node.
async fn node_stats(addr: SocketAddr) -> HashMap<String, u64> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"stats\r\n").await.unwrap();
    let mut buf = Vec::new();
    while !buf.ends_with(b"END\r\n") {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            (w.next() == Some("STAT")).then_some(())?;
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

/// The node saw exactly what the report says.
async fn assert_node_agrees(addr: SocketAddr, r: &Report) {
    let stats = node_stats(addr).await;
    let s = &r.stats;
    let prefilled = r.prefill.as_ref().map_or(0, |p| p.sets);
    assert_eq!(stats["cmd_get"], s.hits + s.misses, "{r}");
    assert_eq!(stats["get_hits"], s.hits, "{r}");
    assert_eq!(stats["cmd_set"], s.sets + prefilled, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_without_login_counts_match_the_node() {
    let node = start_node(None, false, |_| {}).await;
    let addr = node.plain.unwrap();
    let mut c = config(addr, Protocol::Text);
    c.prefill = true;
    c.verify = true;
    let r = bench::run(c).await.unwrap();
    assert_counts_add_up(&r);
    assert_eq!(r.prefill.as_ref().unwrap().sets, 500);
    assert!(r.stats.hits > 0 && r.stats.sets > 0, "{r}");
    assert_eq!((r.stats.misses, r.stats.errors), (0, 0), "{r}");
    assert!(r.latency.p50 > 0 && r.latency.p50 <= r.latency.p99, "{r}");
    assert!(r.latency.p99 <= r.latency.p99_9 && r.latency.p99_9 <= r.latency.max);
    assert_node_agrees(addr, &r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_without_login_zipf_and_sized_values() {
    let node = start_node(None, false, |_| {}).await;
    let addr = node.plain.unwrap();
    let mut c = config(addr, Protocol::Binary);
    c.pipeline = 16;
    c.key_pattern = KeyPattern::Zipf { exponent: 0.99 };
    c.value_size = (10, 3000);
    c.prefill = true;
    c.verify = true;
    let r = bench::run(c).await.unwrap();
    assert_counts_add_up(&r);
    assert!(r.stats.hits > 0, "{r}");
    assert_eq!((r.stats.misses, r.stats.errors), (0, 0), "{r}");
    assert_node_agrees(addr, &r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_prefill_gets_miss_at_first() {
    let node = start_node(None, false, |_| {}).await;
    let mut c = config(node.plain.unwrap(), Protocol::Text);
    c.key_space = 1_000_000;
    c.stop = Stop::Requests(1000);
    let r = bench::run(c).await.unwrap();
    assert_counts_add_up(&r);
    assert_eq!(r.ops(), 1000);
    assert!(r.stats.misses > 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_with_ascii_login() {
    let node = start_node(Some(&two_caches()), false, |_| {}).await;
    let mut c = config(node.plain.unwrap(), Protocol::Text);
    c.login = login("alice", "alice-secret");
    c.prefill = true;
    c.verify = true;
    let r = bench::run(c).await.unwrap();
    assert_counts_add_up(&r);
    assert!(r.stats.hits > 0, "{r}");
    assert_eq!(r.stats.errors, 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_with_sasl_login() {
    let node = start_node(Some(&two_caches()), false, |_| {}).await;
    let mut c = config(node.plain.unwrap(), Protocol::Binary);
    c.login = login("bob", "bob secret");
    c.prefill = true;
    c.verify = true;
    let r = bench::run(c).await.unwrap();
    assert_counts_add_up(&r);
    assert!(r.stats.hits > 0, "{r}");
    assert_eq!(r.stats.errors, 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_over_verified_tls_with_login() {
    let node = start_node(Some(&two_caches()), true, |_| {}).await;
    let ca = node.ca_pem.clone().unwrap();
    let mut c = config(node.tls.unwrap(), Protocol::Binary);
    c.login = login("alice", "alice-secret");
    c.tls = Some(TlsTarget {
        config: memgate::tls::client_config(ca.as_bytes(), None).unwrap(),
        server_name: memgate::tls::server_name("localhost").unwrap(),
    });
    c.prefill = true;
    c.stop = Stop::Requests(2000);
    let r = bench::run(c).await.unwrap();
    assert_counts_add_up(&r);
    assert_eq!(r.ops(), 2000);
    assert!(r.stats.hits > 0 && r.stats.errors == 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_rate_offers_exactly_that_load() {
    let node = start_node(None, false, |_| {}).await;
    let mut c = config(node.plain.unwrap(), Protocol::Binary);
    c.rate = Some(400.0);
    c.prefill = true;
    let r = bench::run(c).await.unwrap();
    assert_counts_add_up(&r);
    // 400 ops/s for 1 s: every request intended before the deadline is
    // sent, however late the sender runs, and none after it.
    assert_eq!(r.ops(), 400, "{r}");
    assert!(r.stats.hits > 0 && r.stats.errors == 0, "{r}");
    assert_eq!(r.to_json()["latency_from"], "intended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_login_error() {
    let node = start_node(Some(&two_caches()), false, |_| {}).await;
    for protocol in [Protocol::Text, Protocol::Binary] {
        let mut c = config(node.plain.unwrap(), protocol);
        c.login = login("alice", "not-the-password");
        match bench::run(c).await {
            Err(BenchError::Login(reason)) => assert!(!reason.contains("not-the-password")),
            other => panic!("{protocol:?}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sets_are_errors() {
    // `reader` may not write: every set comes back NOT_STORED.
    let node = start_node(Some(&two_caches()), false, |_| {}).await;
    for protocol in [Protocol::Text, Protocol::Binary] {
        let mut c = config(node.plain.unwrap(), protocol);
        c.login = login("reader", "reader-secret");
        c.ratio = (1, 1);
        c.stop = Stop::Requests(400);
        let r = bench::run(c).await.unwrap();
        assert_counts_add_up(&r);
        assert_eq!(r.ops(), 400);
        assert_eq!((r.stats.sets, r.stats.errors), (0, 200), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_gives_timeouts() {
    // Accepts and reads, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            held.push(tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            }));
        }
    });
    let mut c = config(addr, Protocol::Text);
    c.timeout = Duration::from_millis(200);
    let r = bench::run(c).await.unwrap();
    assert_counts_add_up(&r);
    assert!(r.stats.timeouts > 0, "{r}");
    assert_eq!(r.stats.errors, r.ops(), "{r}");
    assert!(r.stats.reconnects > 0, "{r}");
    silent.abort();
}

/// A text server that misses every get, and stalls once for 300 ms after
/// its 200th reply.
async fn stalling_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut replies = 0u32;
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut buf).await {
            for _ in buf[..n].windows(2).filter(|w| w == b"\r\n") {
                replies += 1;
                if replies == 200 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                if s.write_all(b"END\r\n").await.is_err() {
                    return;
                }
            }
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_every_delayed_request_only_with_a_rate() {
    let run = |rate: Option<f64>| async move {
        let (addr, server) = stalling_server().await;
        let mut c = config(addr, Protocol::Text);
        c.connections = 1;
        c.pipeline = 1;
        c.ratio = (0, 1);
        c.rate = rate;
        c.stop = match rate {
            Some(_) => Stop::After(Duration::from_secs(1)),
            None => Stop::Requests(1000),
        };
        let r = bench::run(c).await.unwrap();
        server.abort();
        assert_counts_add_up(&r);
        assert_eq!((r.ops(), r.stats.misses), (1000, 1000), "{r}");
        assert!(r.latency.max >= 290_000, "{r}");
        r
    };
    // Closed loop: the benchmark waits with the server, so only the one
    // request that met the stall is slow (coordinated omission).
    let closed = run(None).await;
    assert!(closed.latency.p90 < 50_000, "{closed}");
    // 1000 ops/s: the ~300 requests meant to go out during the stall all
    // count it, from their intended times; a tenth of them waited 200+ ms.
    let paced = run(Some(1000.0)).await;
    assert!(paced.latency.p90 > 150_000, "{paced}");
    assert!(paced.latency.p50 < 50_000, "{paced}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_opens_a_connection_per_request_and_the_node_counts_them() {
    let node = start_node(None, false, |_| {}).await;
    let addr = node.plain.unwrap();
    let before = node_stats(addr).await["total_connections"];
    let mut c = config(addr, Protocol::Text);
    c.churn = true;
    c.pipeline = 1;
    c.connections = 8;
    c.ratio = (0, 1);
    c.prefill = true;
    c.verify = true;
    let r = bench::run(c).await.unwrap();
    assert_counts_add_up(&r);
    // Real connections, each answered with its key's value, and the node
    // saw every one of them (plus the run's opening ones and the stats
    // connections).
    assert!(r.stats.hits >= 100, "{r}");
    assert_eq!((r.stats.misses, r.stats.errors), (0, 0), "{r}");
    assert_node_agrees(addr, &r).await;
    let opened = node_stats(addr).await["total_connections"] - before;
    assert!(opened >= r.stats.hits + 8, "{opened} connections for {r}");
    assert_eq!(r.to_json()["churn"], true);
    assert!(r.to_json()["answered_per_sec"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_over_tls_with_login_does_the_whole_setup_each_time() {
    let node = start_node(Some(&two_caches()), true, |_| {}).await;
    let ca = node.ca_pem.clone().unwrap();
    let churn_as = |password: &str| {
        let mut c = config(node.tls.unwrap(), Protocol::Binary);
        c.churn = true;
        c.pipeline = 1;
        c.login = login("alice", password);
        c.tls = Some(TlsTarget {
            config: memgate::tls::client_config(ca.as_bytes(), None).unwrap(),
            server_name: memgate::tls::server_name("localhost").unwrap(),
        });
        c
    };
    let mut c = churn_as("alice-secret");
    c.ratio = (1, 1);
    c.verify = true;
    c.stop = Stop::Requests(40);
    let r = bench::run(c).await.unwrap();
    assert_counts_add_up(&r);
    assert_eq!(r.ops(), 40, "{r}");
    assert_eq!((r.stats.sets, r.stats.errors), (20, 0), "{r}");
    // A wrong password fails the run before it starts, as without churn.
    let c = churn_as("wrong");
    assert!(matches!(bench::run(c).await, Err(BenchError::Login(_))));
}

fn n_us(json: &serde_json::Value, p: &str) -> u64 {
    json["latency_us"][p].as_u64().unwrap()
}

/// Run the real binary.
fn memgate(args: &[&str]) -> Exit {
    run(args, &[("MEMGATE_LOG", "warn")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_one_json_object() {
    let node = start_node(None, false, |_| {}).await;
    let server = node.plain.unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        memgate(&[
            "bench",
            "--server",
            &server,
            "--protocol",
            "binary",
            "--duration",
            "1500ms",
            "--prefill",
            "--key-space",
            "300",
            "--ratio",
            "1:4",
            "--json",
        ])
    })
    .await
    .unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let n = |k: &str| json[k].as_u64().unwrap();
    assert!(n("ops") > 0);
    assert_eq!(n("ops"), n("hits") + n("misses") + n("sets") + n("errors"));
    assert!(n("hits") > 0);
    assert_eq!(json["protocol"], "binary");
    assert_eq!(json["prefill"]["keys"], 300);
    for p in ["p50", "p90", "p99", "p99_9", "max"] {
        assert!(json["latency_us"][p].as_u64().is_some(), "{p}");
    }
    // The percentile curve rises from the minimum to the maximum.
    let curve: Vec<(f64, u64)> = serde_json::from_value(json["latency_curve_us"].clone()).unwrap();
    assert_eq!(curve.len(), memgate::bench::CURVE_QUANTILES.len());
    assert!(curve
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    assert_eq!(curve.last().unwrap().1, n_us(&json, "max"));
    assert!(json["ops_per_sec"].as_f64().unwrap() > 0.0);
    // The progress line (one after the first second) went to stderr.
    assert!(out.stderr.contains("ops/s"));
}

#[test]
fn bad_arguments_exit_64_with_one_line() {
    for args in [
        &["bench", "--server", "127.0.0.1:1", "--ratio", "0:0"][..],
        &["bench", "--server", "127.0.0.1:1", "--value-size", "9-3"],
        &["bench", "--server", "nonsense"],
        &["bench", "--server", "127.0.0.1:1", "--tls"],
        &[
            "bench",
            "--server",
            "127.0.0.1:1",
            "--duration",
            "1s",
            "--requests",
            "5",
        ],
        &["bench", "--server", "127.0.0.1:1", "--connections", "0"],
        &[
            "bench",
            "--server",
            "127.0.0.1:1",
            "--churn",
            "--pipeline",
            "2",
        ],
    ] {
        let out = memgate(args);
        assert_eq!(out.code, 64, "{args:?}");
        let err = out.stderr;
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

/// `benches/compare.sh --smoke` against the binary under test (needs what
/// `.ci/run` installs: memcached, memcaslap, stunnel4, nutcracker,
/// saslpasswd2): the report has figures for every path and every section,
/// CPU per request beside throughput, the 1-connection latency table and the
/// reply check, and the plots are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_comparison_script_smoke_run_reports_every_path() {
    let out = tempfile::tempdir().unwrap();
    let mut cmd =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/compare.sh"));
    cmd.args(["--smoke", "--memgate", BIN, "--out"])
        .arg(out.path());
    common::run_ok(cmd).await;
    let report = std::fs::read_to_string(out.path().join("RESULTS.md")).unwrap();
    // A figure: digits, maybe with thousands separators or a decimal point.
    let figure = |cell: &str| {
        let c = cell.trim().trim_end_matches('×');
        !c.is_empty() && c.chars().next().unwrap().is_ascii_digit()
    };
    let rows = |name: &str| -> Vec<Vec<String>> {
        report
            .lines()
            .filter(|l| l.starts_with(&format!("| {name} |")))
            .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
            .collect()
    };
    let churn = &report[report.find("## 3. Connection churn").unwrap()..];
    let churn = &churn[..churn.find("\n## ").unwrap()];
    for path in [
        "memcached direct",
        "twemproxy → 3 memcached",
        "stunnel → memcached -Z",
        "memgate → 3 memcached -S -Z",
        "memgate → 3 memgate nodes",
    ] {
        // Churn by memgate bench: connections answered.
        let row = churn
            .lines()
            .find(|l| l.starts_with(&format!("| {path} |")))
            .unwrap_or_else(|| panic!("{path}\n{churn}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(figure(cells[2]) && cells[2] != "0", "{path}: {row}");
        // Throughput by both tools, closed-loop latency, one connection,
        // both rates, and the scaling tables (by both tools, and p99).
        let rows = rows(path);
        assert!(
            rows.len() >= 2 + 1 + 1 + 2 + 3,
            "{path}: {rows:?}\n{report}"
        );
        for row in &rows {
            assert!(figure(&row[2]) || figure(&row[3]), "{path}: {row:?}");
        }
        // The memgate bench row of the 16-connection table ends with the
        // proxy's and the servers' CPU per request (no proxy on direct).
        let bench = rows.iter().find(|r| r[2] == "memgate bench").unwrap();
        let n = bench.len();
        assert!(
            figure(&bench[n - 3]) || path == "memcached direct",
            "{path}: {bench:?}"
        );
        assert!(figure(&bench[n - 2]), "{path}: {bench:?}");
    }
    for server in ["memcached", "memgate"] {
        // Throughput by both tools, and a fill by each.
        let rows = rows(server);
        assert_eq!(rows.len(), 4, "{server}: {rows:?}\n{report}");
        assert!(rows.iter().all(|r| figure(&r[3])), "{server}: {rows:?}");
    }
    // The sidecar with --busy-poll: one row, in the 1-connection table,
    // with its proxy CPU, and its two latency targets.
    let poll = "memgate --busy-poll → 3 memgate nodes";
    let poll_rows = rows(poll);
    assert_eq!(poll_rows.len(), 1, "{poll_rows:?}\n{report}");
    let row = &poll_rows[0];
    assert!(figure(&row[2]) && figure(&row[row.len() - 2]), "{row:?}");
    for q in ["p50", "p99"] {
        let target = format!("| {poll}: {q} ≤ twemproxy's at 1 connection |");
        assert!(report.contains(&target), "{target}\n{report}");
    }
    for proxy in ["memgate → 3 memcached -S -Z", "memgate → 3 memgate nodes"] {
        let target = format!("| churn: {proxy} ≥ 20 × stunnel");
        let row = report.lines().find(|l| l.starts_with(&target));
        assert!(
            row.is_some_and(|r| figure(r.split('|').nth(2).unwrap())),
            "{target}\n{report}"
        );
    }
    for section in [
        "## Machine",
        "## Targets",
        "## 3. Connection churn",
        "## Replies checked",
        "## 1b. Latency at one connection",
        "The paced sender's check",
        "paced sender: direct p50 at 1,000 ops/s within 10 µs",
        "paced sender: direct p50 at 4,000 ops/s within 10 µs",
        "### 30%",
        "### 60%",
        "## Commands",
    ] {
        assert!(report.contains(section), "{section}\n{report}");
    }
    for plot in [
        "throughput_vs_connections",
        "p99_vs_connections",
        "latency_distribution",
        "latency_distribution_rate30",
    ] {
        let svg = std::fs::read_to_string(out.path().join(format!("plots/{plot}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<polyline"),
            "{plot}"
        );
        assert!(svg.contains("memgate → 3 memgate nodes"), "{plot}");
    }
}
