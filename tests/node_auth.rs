//! The node's auth gate, tenants and capabilities, over real sockets.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn text_commands_before_login_are_refused() {
    let node = start_node(Some(&two_caches()), false, |_| {}).await;
    let mut c = connect(node.plain.unwrap()).await;
    c.expect(b"get foo\r\n", b"CLIENT_ERROR unauthenticated\r\n")
        .await;
    c.expect(b"mg foo v\r\n", b"CLIENT_ERROR unauthenticated\r\n")
        .await;
    c.expect(b"stats\r\n", b"CLIENT_ERROR unauthenticated\r\n")
        .await;
    // Still usable: the login then works.
    c.expect(b"set alice 0 0 12\r\nalice-secret\r\n", b"STORED\r\n")
        .await;
    c.expect(b"get foo\r\n", b"END\r\n").await;
}

#[tokio::test]
async fn binary_commands_before_login_get_auth_error() {
    let node = start_node(Some(&two_caches()), false, |_| {}).await;
    let mut c = connect(node.plain.unwrap()).await;
    c.send(&bin_request(0x00, b"foo", &[], &[], 1, 0)).await;
    let r = c.read_bin().await;
    assert_eq!((r.status, r.opaque), (0x20, 1));
    c.send(&bin_request(0x20, b"", &[], &[], 2, 0)).await;
    let r = c.read_bin().await;
    assert_eq!((r.status, r.value.as_slice()), (0, b"PLAIN".as_slice()));
    assert_eq!(c.sasl_login("alice", "wrong").await, 0x20);
    assert_eq!(c.sasl_login("alice", "alice-secret").await, 0);
    c.send(&bin_request(0x00, b"foo", &[], &[], 3, 0)).await;
    assert_eq!(c.read_bin().await.status, 0x01);
}

#[tokio::test]
async fn ascii_auth_both_forms_and_failure() {
    let node = start_node(Some(&two_caches()), false, |_| {}).await;
    // memcached -Y form: any key, value "user password" (password has a space).
    let mut c = connect(node.plain.unwrap()).await;
    c.expect(
        b"set x 0 0 3\r\nbad\r\n",
        b"CLIENT_ERROR authentication failure\r\n",
    )
    .await;
    c.expect(b"set anykey 0 0 14\r\nbob bob secret\r\n", b"STORED\r\n")
        .await;
    c.expect(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n").await;
}

#[tokio::test]
async fn caches_are_isolated() {
    let node = start_node(Some(&two_caches()), false, |_| {}).await;
    let mut a = connect(node.plain.unwrap()).await;
    a.expect(b"set alice 0 0 12\r\nalice-secret\r\n", b"STORED\r\n")
        .await;
    a.expect(b"set shared 5 0 5\r\nfromA\r\n", b"STORED\r\n")
        .await;
    let mut b = connect(node.plain.unwrap()).await;
    assert_eq!(b.sasl_login("bob", "bob secret").await, 0);
    b.send(&bin_request(0x00, b"shared", &[], &[], 9, 0)).await;
    assert_eq!(
        b.read_bin().await.status,
        0x01,
        "bob must not see alice's key"
    );
    a.expect(b"get shared\r\n", b"VALUE shared 5 5\r\nfromA\r\nEND\r\n")
        .await;
    a.expect(b"flush_all\r\n", b"OK\r\n").await;
    a.expect(b"get shared\r\n", b"END\r\n").await;
}

#[tokio::test]
async fn capabilities_are_enforced() {
    let node = start_node(Some(&two_caches()), false, |_| {}).await;
    let mut w = connect(node.plain.unwrap()).await;
    w.expect(b"set alice 0 0 12\r\nalice-secret\r\n", b"STORED\r\n")
        .await;
    w.expect(b"set k 0 0 1\r\n5\r\n", b"STORED\r\n").await;

    let mut r = connect(node.plain.unwrap()).await;
    r.expect(b"set reader 0 0 13\r\nreader-secret\r\n", b"STORED\r\n")
        .await;
    r.expect(b"get k\r\n", b"VALUE k 0 1\r\n5\r\nEND\r\n").await;
    r.expect(b"set k 0 0 1\r\n6\r\n", b"NOT_STORED\r\n").await;
    r.expect(b"delete k\r\n", b"CLIENT_ERROR permission denied\r\n")
        .await;
    r.expect(b"incr k 1\r\n", b"CLIENT_ERROR permission denied\r\n")
        .await;
    r.expect(b"touch k 10\r\n", b"CLIENT_ERROR permission denied\r\n")
        .await;
    r.expect(b"gat 10 k\r\n", b"CLIENT_ERROR permission denied\r\n")
        .await;
    r.expect(b"flush_all\r\n", b"CLIENT_ERROR flush_all not allowed\r\n")
        .await;
    r.expect(b"get k\r\n", b"VALUE k 0 1\r\n5\r\nEND\r\n").await;

    // The same over binary: SET → 0x05, DELETE/FLUSH → 0x20.
    let mut rb = connect(node.plain.unwrap()).await;
    assert_eq!(rb.sasl_login("reader", "reader-secret").await, 0);
    rb.send(&bin_request(0x01, b"k", &[0; 8], b"7", 1, 0)).await;
    assert_eq!(rb.read_bin().await.status, 0x05);
    rb.send(&bin_request(0x04, b"k", &[], &[], 2, 0)).await;
    assert_eq!(rb.read_bin().await.status, 0x20);
    rb.send(&bin_request(0x08, b"", &[], &[], 3, 0)).await;
    assert_eq!(rb.read_bin().await.status, 0x20);
}

#[tokio::test]
async fn disabled_cache_cannot_log_in_and_counts_errors() {
    let node = start_node(Some(&two_caches()), false, |_| {}).await;
    let mut c = connect(node.plain.unwrap()).await;
    assert_eq!(c.sasl_login("carol", "carol-secret").await, 0x20);
    let tenants = node.shared.tenants();
    let carol = tenants.get("3000").unwrap();
    assert_eq!(
        carol
            .stats
            .auth_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn unauthenticated_connection_is_closed_after_timeout() {
    let node = start_node(Some(&two_caches()), false, |c| {
        c.auth_timeout = Duration::from_millis(300)
    })
    .await;
    let mut c = connect(node.plain.unwrap()).await;
    let started = std::time::Instant::now();
    let rest = c.read_to_close().await;
    assert!(rest.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn reload_keeps_data_and_applies_new_credentials() {
    let node = start_node(Some(&two_caches()), false, |_| {}).await;
    let mut a = connect(node.plain.unwrap()).await;
    a.expect(b"set alice 0 0 12\r\nalice-secret\r\n", b"STORED\r\n")
        .await;
    a.expect(b"set kept 0 0 4\r\ndata\r\n", b"STORED\r\n").await;

    let path = node.caches_path.clone().unwrap();
    let updated = two_caches().replace("alice-secret", "new-secret");
    std::fs::write(&path, updated).unwrap();
    node.shared.reload().expect("reload");
    // The open connection keeps working, and so does its data.
    a.expect(b"get kept\r\n", b"VALUE kept 0 4\r\ndata\r\nEND\r\n")
        .await;
    let mut c = connect(node.plain.unwrap()).await;
    assert_eq!(c.sasl_login("alice", "alice-secret").await, 0x20);
    assert_eq!(c.sasl_login("alice", "new-secret").await, 0);

    // A broken file keeps the old caches.
    std::fs::write(&path, "[[cache]]\nid = 5\n").unwrap();
    assert!(node.shared.reload().is_err());
    let mut d = connect(node.plain.unwrap()).await;
    assert_eq!(d.sasl_login("alice", "new-secret").await, 0);
}

#[tokio::test]
async fn stats_are_per_cache() {
    let node = start_node(Some(&two_caches()), false, |_| {}).await;
    let mut a = connect(node.plain.unwrap()).await;
    a.expect(b"set alice 0 0 12\r\nalice-secret\r\n", b"STORED\r\n")
        .await;
    a.expect(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n").await;
    a.expect(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n").await;
    a.expect(b"get nope\r\n", b"END\r\n").await;
    let stats = text_stats(&mut a).await;
    for name in [
        "curr_connections",
        "total_connections",
        "curr_items",
        "total_items",
        "bytes",
        "limit_maxbytes",
        "time",
        "auth_cmds",
        "auth_errors",
        "bytes_read",
        "bytes_written",
        "cmd_get",
        "cmd_set",
        "cmd_delete",
        "cmd_flush",
        "cmd_touch",
        "get_hits",
        "get_misses",
        "delete_hits",
        "delete_misses",
        "incr_hits",
        "incr_misses",
        "decr_hits",
        "decr_misses",
        "touch_hits",
        "touch_misses",
        "cas_hits",
        "cas_misses",
        "cas_badval",
        "evictions",
        "expired",
        "pid",
        "uptime",
        "version",
        "threads",
    ] {
        assert!(stats.iter().any(|(k, _)| k == name), "stats lacks {name}");
    }
    let get = |name: &str| {
        stats
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("get_hits"), "1");
    assert_eq!(get("get_misses"), "1");
    assert_eq!(get("curr_items"), "1");
    assert_eq!(get("limit_maxbytes"), (8u64 << 20).to_string());

    let mut b = connect(node.plain.unwrap()).await;
    assert_eq!(b.sasl_login("bob", "bob secret").await, 0);
    b.send(&bin_request(0x10, b"", &[], &[], 1, 0)).await;
    let mut items = None;
    loop {
        let r = b.read_bin().await;
        if r.key.is_empty() {
            break;
        }
        if r.key == b"curr_items" {
            items = Some(r.value);
        }
    }
    assert_eq!(
        items.as_deref(),
        Some(b"0".as_slice()),
        "bob's cache is empty"
    );
}

pub async fn text_stats<S>(c: &mut Client<S>) -> Vec<(String, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    c.send(b"stats\r\n").await;
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        let b = c.read_exact(1).await[0];
        line.push(b);
        if line.ends_with(b"\r\n") {
            let text = String::from_utf8(line.clone()).unwrap();
            line.clear();
            let text = text.trim_end();
            if text == "END" {
                return out;
            }
            let mut parts = text.splitn(3, ' ');
            assert_eq!(parts.next(), Some("STAT"));
            out.push((
                parts.next().unwrap().into(),
                parts.next().unwrap_or("").into(),
            ));
        }
    }
}

#[tokio::test]
async fn per_cache_prometheus_metrics() {
    let node = start_node(Some(&two_caches()), false, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let mut a = connect(node.plain.unwrap()).await;
    a.expect(b"set alice 0 0 12\r\nalice-secret\r\n", b"STORED\r\n")
        .await;
    a.expect(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n").await;
    a.expect(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n").await;
    let mut bad = connect(node.plain.unwrap()).await;
    assert_eq!(bad.sasl_login("bob", "nope").await, 0x20);
    let (status, body) = http_get(node.metrics.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("memgate_node_cache_items{cache=\"1561\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("memgate_node_cache_items{cache=\"2000\"} 0"),
        "{body}"
    );
    assert!(
        body.contains("memgate_node_cache_commands_total{cache=\"1561\",stat=\"get_hits\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("memgate_node_auth_failures_total{cache=\"2000\"} 1"),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "memgate_node_cache_limit_bytes{{cache=\"1561\"}} {}",
            8u64 << 20
        )),
        "{body}"
    );
}
