//! What-if memory against ground truth: the same trace replayed against
//! real node caches of several limits, over real sockets (pipelined text
//! gets, a `set` after each miss), each cache's measured hit rate
//! (`get_hits / cmd_get`) compared with what the full-size cache's curve
//! (the admin endpoint's `what_if`) predicted for that limit. And a node
//! with `--what-if off`: its admin endpoint, analytics' API and the
//! dashboard say that tracking is off rather than show a curve.

mod common;

use std::net::SocketAddr;

use common::{basic_auth, connect, http_request, two_caches, TestNode};
use memgate::bench::keys::{self, Zipf};
use memgate::mrc::WhatIf;
use memgate::node::admin::AdminConfig;
use memgate::node::store::charge;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const TOKEN: &str = "whatif-test-token-0123456789";
const MIB: u64 = 1 << 20;
/// The full-size cache's limit; the others are 1/2, 1/4 and 1/8 of it,
/// sizes its curve reports exactly (`mrc::MULTIPLES`).
const FULL: u64 = 8 * MIB;
const CACHES: [(&str, u64); 4] = [
    ("full", FULL),
    ("half", FULL / 2),
    ("quarter", FULL / 4),
    ("eighth", FULL / 8),
];
const VALUE: usize = 600;
/// Gets per pipelined batch.
const BATCH: usize = 100;
const MAX_ERROR: f64 = 0.03;

fn caches_file() -> String {
    CACHES
        .iter()
        .map(|(id, limit)| {
            format!(
                "[[cache]]\nid = \"{id}\"\nmemory_limit = {limit}\n\n\
                 [[cache.credential]]\nusername = \"{id}\"\npassword = \"{id}-secret\"\nprimary = true\n\n"
            )
        })
        .collect()
}

fn key(i: usize) -> String {
    format!("k{i:06}")
}

/// Keys whose items fill 80% of the full cache: it never evicts, the
/// smaller ones do.
fn key_count() -> usize {
    (FULL as usize * 8 / 10) / charge(key(0).len(), VALUE)
}

/// Zipf 0.99 over `n` keys (the load generator's own sampler).
fn zipf(n: usize, len: usize, seed: u64) -> Vec<usize> {
    let law = Zipf::new(n as u64, 0.99);
    let mut rng = keys::Rng::new(seed);
    // Ranks run from 1; key indexes from 0.
    (0..len)
        .map(|_| (law.sample(&mut rng) - 1) as usize)
        .collect()
}

/// A loop over `n` keys, `len` reads in all.
fn scan(n: usize, len: usize) -> Vec<usize> {
    (0..len).map(|i| i % n).collect()
}

/// Replay `trace` as one client of cache `id`: gets in pipelined batches,
/// then a `set … noreply` for each miss (demand fill).
async fn replay(addr: SocketAddr, id: &str, trace: &[usize]) {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::with_capacity(1 << 16, read);
    let password = format!("{id}-secret");
    let login = format!("set {id} 0 0 {}\r\n{password}\r\n", password.len());
    write.write_all(login.as_bytes()).await.unwrap();
    let mut line = String::new();
    read.read_line(&mut line).await.unwrap();
    assert_eq!(line, "STORED\r\n", "login to {id}");
    let value = vec![b'v'; VALUE];
    let mut data = vec![0u8; VALUE + 2];
    for batch in trace.chunks(BATCH) {
        let mut out = Vec::with_capacity(batch.len() * 12);
        for &k in batch {
            out.extend_from_slice(format!("get {}\r\n", key(k)).as_bytes());
        }
        write.write_all(&out).await.unwrap();
        let mut misses = Vec::new();
        for &k in batch {
            line.clear();
            read.read_line(&mut line).await.unwrap();
            if line.starts_with("VALUE ") {
                read.read_exact(&mut data).await.unwrap();
                line.clear();
                read.read_line(&mut line).await.unwrap();
            } else {
                misses.push(k);
            }
            assert_eq!(line, "END\r\n", "reply to get {}", key(k));
        }
        let mut out = Vec::with_capacity(misses.len() * (VALUE + 40));
        for k in misses {
            out.extend_from_slice(format!("set {} 0 0 {VALUE} noreply\r\n", key(k)).as_bytes());
            out.extend_from_slice(&value);
            out.extend_from_slice(b"\r\n");
        }
        write.write_all(&out).await.unwrap();
    }
}

/// A node with `caches` and an admin endpoint, its tracker on or off.
async fn node_with_admin(caches: &str, what_if: bool) -> TestNode {
    common::start_node(Some(caches), false, |c| {
        c.admin = Some(AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: Some(TOKEN.into()),
            tls: None,
        });
        c.what_if = what_if;
    })
    .await
}

async fn admin_get(node: &TestNode, path: &str) -> Value {
    let bearer = format!("Bearer {TOKEN}");
    let (status, body) = http_request(node.admin.unwrap(), "GET", path, Some(&bearer), None).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Replay `trace` against every cache of a fresh node (concurrently, one
/// connection each); returns (limit, measured, predicted) per cache.
async fn measure(name: &str, trace: &[usize]) -> Vec<(u64, f64, f64)> {
    let node = node_with_admin(&caches_file(), true).await;
    let addr = node.plain.unwrap();
    let runs: Vec<_> = CACHES
        .iter()
        .map(|(id, _)| {
            let trace = trace.to_vec();
            tokio::spawn(async move { replay(addr, id, &trace).await })
        })
        .collect();
    for run in runs {
        run.await.unwrap();
    }
    let body = admin_get(&node, "/admin/caches/full/whatif").await;
    let curve: WhatIf = serde_json::from_value(body["what_if"].clone()).unwrap();
    assert!(curve.trustworthy, "{name}: {curve:?}");
    assert_eq!(curve.accesses_total, trace.len() as u64, "{name}");
    let mut out = Vec::new();
    for (id, limit) in CACHES {
        let stats = admin_get(&node, &format!("/admin/caches/{id}/stats")).await;
        let (hits, gets) = (stats["get_hits"].as_u64(), stats["cmd_get"].as_u64());
        let (hits, gets) = (hits.unwrap(), gets.unwrap());
        assert_eq!(gets, trace.len() as u64, "{name} {id}");
        let at = curve.sizes.iter().position(|&s| s == limit);
        let predicted = curve.hit_rates[at.expect("the limit is one of the curve's sizes")];
        out.push((limit, hits as f64 / gets as f64, predicted));
    }
    println!(
        "{name}: {} keys, {} reads, {} sampled keys (rate {:.4}), {} sampled reads",
        key_count(),
        trace.len(),
        curve.sampled_keys,
        curve.sample_rate,
        curve.sampled_accesses
    );
    for (limit, measured, predicted) in &out {
        println!(
            "  {:>5.2} MiB: measured {measured:.4}, predicted {predicted:.4}, error {:+.4}",
            *limit as f64 / MIB as f64,
            predicted - measured
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predicted_hit_rates_match_real_caches() {
    let n = key_count();
    let zipf = measure("zipf 0.99", &zipf(n, 10 * n, 7)).await;
    let scan = measure("looping scan", &scan(n, 8 * n)).await;
    let mut worst = 0.0f64;
    for (name, points) in [("zipf", &zipf), ("scan", &scan)] {
        for &(limit, measured, predicted) in points {
            let error = (predicted - measured).abs();
            worst = worst.max(error);
            assert!(
                error <= MAX_ERROR,
                "{name} at {limit} bytes: measured {measured:.4}, predicted {predicted:.4}"
            );
        }
    }
    // The curve has a shape: the scan thrashes every cache smaller than
    // its loop, and Zipf gains with memory.
    assert!(scan[0].1 > 0.8 && scan[1].1 < 0.05, "{scan:?}");
    assert!(zipf[0].1 > zipf[3].1 + 0.1, "{zipf:?}");
    println!("worst absolute error {worst:.4}");
}

/// Analytics over `nodes`: the cache 1561's what-if API answer and its
/// dashboard page, as alice sees them.
async fn analytics_view(nodes: &[&TestNode]) -> (Value, String) {
    let list = nodes
        .iter()
        .map(|n| format!("{}={}", n.plain.unwrap(), n.admin.unwrap()))
        .collect::<Vec<_>>()
        .join(",");
    let (addr, _stop) = common::start_analytics(common::analytics_config(&list, Some(TOKEN))).await;
    let alice = basic_auth("alice", "alice-secret");
    let (status, api) = http_request(addr, "GET", "/api/v1/1561/whatif", Some(&alice), None).await;
    assert_eq!(status, 200, "{api}");
    let (status, page) = http_request(addr, "GET", "/caches/1561", Some(&alice), None).await;
    assert_eq!(status, 200, "{page}");
    (serde_json::from_str(&api).unwrap(), page)
}

#[tokio::test]
async fn tracking_off_is_said_not_drawn() {
    let on = node_with_admin(&two_caches(), true).await;
    let off = node_with_admin(&two_caches(), false).await;
    for node in [&on, &off] {
        let mut c = connect(node.plain.unwrap()).await;
        c.expect(b"set alice 0 0 12\r\nalice-secret\r\n", b"STORED\r\n")
            .await;
        c.expect(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n").await;
        c.expect(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n").await;
    }

    // The node: a field that says so, and no curve.
    let body = admin_get(&off, "/admin/caches/1561/whatif").await;
    assert_eq!(body["tracking"], false, "{body}");
    assert!(body["what_if"].is_null(), "{body}");
    let body = admin_get(&on, "/admin/caches/1561/whatif").await;
    assert_eq!(body["tracking"], true, "{body}");
    assert_eq!(body["what_if"]["accesses_total"], 1, "{body}");

    // Analytics over both: the curve of the tracking node, and which node
    // is left out, in the API and on the page.
    let off_label = off.plain.unwrap().to_string();
    let (api, page) = analytics_view(&[&on, &off]).await;
    assert_eq!(api["tracking_off"], serde_json::json!([off_label]), "{api}");
    assert_eq!(api["what_if"]["limit"], 8 << 20, "{api}");
    let servers = api["servers"].as_object().unwrap();
    assert_eq!(servers.len(), 1, "{api}");
    assert!(
        servers.contains_key(&on.plain.unwrap().to_string()),
        "{api}"
    );
    assert!(page.contains("id=\"what-if-chart\""), "{page}");
    assert!(page.contains("id=\"what-if-partial\"") && page.contains(&off_label));

    // Over the node with tracking off alone: a note in place of the panel.
    let (api, page) = analytics_view(&[&off]).await;
    assert!(api["what_if"].is_null(), "{api}");
    assert_eq!(api["tracking_off"], serde_json::json!([off_label]), "{api}");
    assert!(page.contains("id=\"what-if-off\"") && page.contains("tracking is off"));
    assert!(!page.contains("what-if-chart") && !page.contains("what-if-note"));
}
