//! The node's protocol behaviour over real sockets (plain and TLS), with bad input.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn text_storage_and_retrieval() {
    let node = start_node(None, false, |_| {}).await;
    let mut c = connect(node.plain.unwrap()).await;
    c.expect(b"set a 1 0 3\r\nabc\r\n", b"STORED\r\n").await;
    c.expect(b"add a 0 0 1\r\nx\r\n", b"NOT_STORED\r\n").await;
    c.expect(b"replace nope 0 0 1\r\nx\r\n", b"NOT_STORED\r\n")
        .await;
    c.expect(b"append a 0 0 2\r\nde\r\n", b"STORED\r\n").await;
    c.expect(b"prepend a 0 0 1\r\n_\r\n", b"STORED\r\n").await;
    c.expect(
        b"get a nope a\r\n",
        b"VALUE a 1 6\r\n_abcde\r\nVALUE a 1 6\r\n_abcde\r\nEND\r\n",
    )
    .await;
    c.send(b"gets a\r\n").await;
    let line = String::from_utf8(c.read_exact(b"VALUE a 1 6 ".len()).await).unwrap();
    assert_eq!(line, "VALUE a 1 6 ");
    let mut cas = String::new();
    loop {
        let b = c.read_exact(1).await[0];
        if b == b'\r' {
            break;
        }
        cas.push(b as char);
    }
    c.read_exact(b"\n_abcde\r\nEND\r\n".len()).await;
    let cas: u64 = cas.parse().unwrap();
    c.expect(
        format!("cas a 2 0 1 {}\r\nz\r\n", cas + 1000).as_bytes(),
        b"EXISTS\r\n",
    )
    .await;
    c.expect(
        format!("cas a 2 0 1 {cas}\r\nz\r\n").as_bytes(),
        b"STORED\r\n",
    )
    .await;
    c.expect(b"cas missing 0 0 1 1\r\nz\r\n", b"NOT_FOUND\r\n")
        .await;
    c.expect(b"get a\r\n", b"VALUE a 2 1\r\nz\r\nEND\r\n").await;
    c.expect(b"delete a\r\n", b"DELETED\r\n").await;
    c.expect(b"delete a\r\n", b"NOT_FOUND\r\n").await;
    c.expect(b"set n 0 0 2\r\n10\r\n", b"STORED\r\n").await;
    c.expect(b"incr n 5\r\n", b"15\r\n").await;
    c.expect(b"decr n 100\r\n", b"0\r\n").await;
    c.expect(b"set big 0 0 20\r\n18446744073709551615\r\n", b"STORED\r\n")
        .await;
    c.expect(b"incr big 2\r\n", b"1\r\n").await;
    c.expect(b"incr a 1\r\n", b"NOT_FOUND\r\n").await;
    c.expect(b"touch n 100\r\n", b"TOUCHED\r\n").await;
    // memcached rewrites a shrinking decr in place, padding with spaces.
    c.expect(b"gat 100 n\r\n", b"VALUE n 0 2\r\n0 \r\nEND\r\n")
        .await;
    // noreply: nothing comes back, the next command answers.
    c.expect(
        b"set q 0 0 1 noreply\r\nq\r\nget q\r\n",
        b"VALUE q 0 1\r\nq\r\nEND\r\n",
    )
    .await;
    c.expect(
        b"version\r\n",
        format!("VERSION {}\r\n", memgate::VERSION).as_bytes(),
    )
    .await;
    c.expect(b"verbosity 1\r\n", b"OK\r\n").await;
    c.expect(b"flush_all\r\n", b"OK\r\n").await;
    c.expect(b"get q\r\n", b"END\r\n").await;
    c.send(b"quit\r\n").await;
    assert!(c.read_to_close().await.is_empty());
}

#[tokio::test]
async fn expiry_negative_means_gone() {
    let node = start_node(None, false, |_| {}).await;
    let mut c = connect(node.plain.unwrap()).await;
    c.expect(b"set e 0 -1 1\r\nx\r\n", b"STORED\r\n").await;
    c.expect(b"get e\r\n", b"END\r\n").await;
    c.expect(b"set e 0 1 1\r\nx\r\n", b"STORED\r\n").await;
    c.expect(b"get e\r\n", b"VALUE e 0 1\r\nx\r\nEND\r\n").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    c.expect(b"get e\r\n", b"END\r\n").await;
}

#[tokio::test]
async fn meta_commands() {
    let node = start_node(None, false, |_| {}).await;
    let mut c = connect(node.plain.unwrap()).await;
    c.expect(b"ms mk 2 F5 T0\r\nhi\r\n", b"HD\r\n").await;
    c.expect(b"mg mk v f\r\n", b"VA 2 f5\r\nhi\r\n").await;
    c.expect(b"mg mk k O123\r\n", b"HD kmk O123\r\n").await;
    c.expect(b"mg missing v\r\n", b"EN\r\n").await;
    c.expect(b"mg missing v q\r\nmn\r\n", b"MN\r\n").await;
    c.expect(b"ma cnt N0 J10\r\n", b"HD\r\n").await;
    c.expect(b"ma cnt v D5\r\n", b"VA 2\r\n15\r\n").await;
    c.expect(b"md mk\r\n", b"HD\r\n").await;
    c.expect(b"md mk\r\n", b"NF\r\n").await;
    c.expect(b"me missing\r\n", b"EN\r\n").await;
    // text and meta mix on one connection
    c.expect(
        b"set t 0 0 1\r\n1\r\nmg t v\r\n",
        b"STORED\r\nVA 1\r\n1\r\n",
    )
    .await;
}

/// memgate's sidecar copies over the wire (`ms <key> <len> G [E<version>]
/// [MS]`, docs/node.md): a replica's write ("mirror") keeps the CAS its
/// first node gave it and passes only an older item; a read-repair copy is
/// an add that keeps it too; a tombstone refuses every copy.
#[tokio::test]
async fn versioned_copies() {
    let node = start_node(None, false, |_| {}).await;
    let mut c = connect(node.plain.unwrap()).await;
    c.expect(b"ms k 2 G E1000 MS T100 F3 c\r\nv1\r\n", b"HD c1000\r\n")
        .await;
    c.expect(b"mg k c f t v\r\n", b"VA 2 c1000 f3 t100\r\nv1\r\n")
        .await;
    // The same write again, or an older one arriving late: EX, unchanged.
    c.expect(b"ms k 2 G E1000 MS c\r\nv0\r\n", b"EX c0\r\n")
        .await;
    c.expect(b"ms k 2 G E999 MS\r\nv0\r\n", b"EX\r\n").await;
    c.expect(b"mg k c v\r\n", b"VA 2 c1000\r\nv1\r\n").await;
    c.expect(b"ms k 2 MS G E1001 c\r\nv2\r\n", b"HD c1001\r\n")
        .await;
    // This node's own CAS uniques afterwards are greater.
    c.send(b"ms k 2 c\r\nv3\r\n").await;
    let line = c.read_line().await;
    let cas: u64 = line.strip_prefix("HD c").unwrap().parse().unwrap();
    assert!(cas > 1001, "{line}");
    // A tombstone refuses every copy while it lasts.
    c.expect(b"md k G10\r\n", b"HD\r\n").await;
    c.expect(b"ms k 2 G E5000 MS\r\nv4\r\n", b"NS\r\n").await;
    c.expect(b"ms k 2 G E5000\r\nv4\r\n", b"NS\r\n").await;
    c.expect(b"ms k 2 G\r\nv4\r\n", b"NS\r\n").await;
    c.expect(b"mg k v\r\n", b"EN\r\n").await;
    // A read-repair copy: an add that keeps its version.
    c.expect(b"ms a 2 G E77 c\r\nv1\r\n", b"HD c77\r\n").await;
    c.expect(b"ms a 2 G E78 ME c\r\nv2\r\n", b"NS c0\r\n").await;
    c.expect(b"mg a c v\r\n", b"VA 2 c77\r\nv1\r\n").await;
    // A flushed item is no item: an older mirror stores.
    c.expect(b"flush_all\r\n", b"OK\r\n").await;
    c.expect(b"ms a 2 G E3 MS c\r\nv3\r\n", b"HD c3\r\n").await;
    c.expect(b"mg a c v\r\n", b"VA 2 c3\r\nv3\r\n").await;
    // Over the item size limit: the reply an over-size set gets, and the
    // old value is gone as after one.
    let len = memgate::node::config::defaults::MAX_ITEM_SIZE;
    let data = vec![b'x'; len];
    for head in ["ms a {len} T0", "ms a {len} G E9 MS"] {
        let mut request = head.replace("{len}", &len.to_string()).into_bytes();
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(&data);
        request.extend_from_slice(b"\r\n");
        c.expect(&request, b"SERVER_ERROR object too large for cache\r\n")
            .await;
    }
    c.expect(b"mg a v\r\n", b"EN\r\n").await;
    // What is not a copy is refused as memcached refuses a flag it does
    // not know; a version no CAS can be is a bad command.
    c.expect(b"ms k 2 G MS\r\nvv\r\n", b"CLIENT_ERROR invalid flag\r\n")
        .await;
    c.expect(b"ms k 2 E5\r\nvv\r\n", b"CLIENT_ERROR invalid flag\r\n")
        .await;
    c.expect(
        b"ms z 2 G E0 MS\r\nvv\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    c.expect(b"mn\r\n", b"MN\r\n").await;
}

/// memgate's versioned tombstones over the wire (`md <key> G<ttl> [E<version>]
/// [c]`, docs/node.md): `c` reports the CAS of the item the delete removed;
/// a tombstone with a version refuses every add-copy and the mirrors up to
/// its version, and lets a newer mirror be judged by CAS alone; one without
/// refuses every copy; a key buried twice keeps the stronger refusal.
#[tokio::test]
async fn versioned_tombstones() {
    let node = start_node(None, false, |_| {}).await;
    let mut c = connect(node.plain.unwrap()).await;
    // The report: the removed item's CAS, as `mg` showed it; on a miss,
    // the key's next CAS, above every one it had before.
    c.expect(b"ms k 2\r\nv1\r\n", b"HD\r\n").await;
    c.send(b"mg k c\r\n").await;
    let cas = c.read_line().await;
    let cas = cas.strip_prefix("HD c").expect("a hit with its CAS");
    c.expect(b"md k G10 c\r\n", format!("HD c{cas}\r\n").as_bytes())
        .await;
    c.send(b"md k G10 c\r\n").await;
    let clock = c.read_line().await;
    let clock: u64 = clock
        .strip_prefix("NF c")
        .and_then(|n| n.parse().ok())
        .expect("a miss with the clock");
    assert!(clock > cas.parse::<u64>().unwrap(), "{clock} after {cas}");
    c.expect(b"mg k v\r\n", b"EN\r\n").await;
    // A client's delete answers as memcached's, `c` or not.
    c.expect(b"ms j 2 T0\r\nv1\r\n", b"HD\r\n").await;
    c.expect(b"md j c\r\n", b"HD\r\n").await;
    // Version 5: mirrors up to 5 and every add-copy are refused; a mirror
    // of a later write stores with its version, then is judged by CAS.
    c.expect(b"ms v 2 G E3 MS\r\nv3\r\n", b"HD\r\n").await;
    c.expect(b"md v G10 E5\r\n", b"HD\r\n").await;
    c.expect(b"ms v 2 G E5 MS\r\nv5\r\n", b"NS\r\n").await;
    c.expect(b"ms v 2 G E4 MS c\r\nv4\r\n", b"NS c0\r\n").await;
    c.expect(b"ms v 2 G E9\r\nv9\r\n", b"NS\r\n").await;
    c.expect(b"ms v 2 G\r\nvv\r\n", b"NS\r\n").await;
    c.expect(b"ms v 2 G E6 MS c\r\nv6\r\n", b"HD c6\r\n").await;
    c.expect(b"mg v c v\r\n", b"VA 2 c6\r\nv6\r\n").await;
    c.expect(b"ms v 2 G E6 MS\r\nvx\r\n", b"EX\r\n").await;
    c.expect(b"ms v 2 G E7\r\nvx\r\n", b"NS\r\n").await;
    // Without a version, every mirror is refused.
    c.expect(b"md w G10\r\n", b"NF\r\n").await;
    c.expect(b"ms w 2 G E1000 MS\r\nvv\r\n", b"NS\r\n").await;
    // Buried twice: no version wins over a version, else the greater one.
    c.expect(b"md w G10 E5\r\n", b"NF\r\n").await;
    c.expect(b"ms w 2 G E1000 MS\r\nvv\r\n", b"NS\r\n").await;
    c.expect(b"md y G10 E9\r\n", b"NF\r\n").await;
    c.send(b"md y G10 E3 c\r\n").await;
    assert!(c.read_line().await.starts_with("NF c"));
    c.expect(b"ms y 2 G E9 MS\r\nv9\r\n", b"NS\r\n").await;
    c.expect(b"ms y 2 G E10 MS\r\nvA\r\n", b"HD\r\n").await;
    c.expect(b"mg y c v\r\n", b"VA 2 c10\r\nvA\r\n").await;
    // A version without a tombstone is the flag memcached 1.6.18 does not
    // know; a version 0 names no write.
    for line in [&b"md k E5\r\n"[..], b"md k E5 c\r\n"] {
        c.expect(line, b"CLIENT_ERROR invalid or duplicate flag\r\n")
            .await;
    }
    c.expect(b"md k G10 E0\r\n", b"CLIENT_ERROR invalid flag\r\n")
        .await;
    c.expect(b"mn\r\n", b"MN\r\n").await;
}

#[tokio::test]
async fn binary_pipeline_getkq_noop() {
    let node = start_node(None, false, |_| {}).await;
    let mut c = connect(node.plain.unwrap()).await;
    let mut burst = Vec::new();
    for (i, key) in [b"k1", b"k2"].iter().enumerate() {
        burst.extend(bin_request(
            0x11,
            *key,
            &[0, 0, 0, 7, 0, 0, 0, 0],
            b"val",
            i as u32,
            0,
        ));
    }
    burst.extend(bin_request(0x0d, b"k1", &[], &[], 10, 0));
    burst.extend(bin_request(0x0d, b"zz", &[], &[], 11, 0));
    burst.extend(bin_request(0x0d, b"k2", &[], &[], 12, 0));
    burst.extend(bin_request(0x0a, b"", &[], &[], 13, 0));
    c.send(&burst).await;
    let r = c.read_bin().await;
    assert_eq!(
        (r.opcode, r.opaque, r.key.as_slice(), r.value.as_slice()),
        (0x0d, 10, b"k1".as_slice(), b"val".as_slice())
    );
    assert_eq!(r.extras, [0, 0, 0, 7]);
    let r = c.read_bin().await;
    assert_eq!((r.opaque, r.key.as_slice()), (12, b"k2".as_slice()));
    let r = c.read_bin().await;
    assert_eq!((r.opcode, r.opaque, r.status), (0x0a, 13, 0));
}

#[tokio::test]
async fn binary_unknown_opcode_and_oversize_body() {
    let node = start_node(None, false, |_| {}).await;
    let mut c = connect(node.plain.unwrap()).await;
    c.send(&bin_request(0x1f, b"", &[], &[], 5, 0)).await;
    let r = c.read_bin().await;
    assert_eq!((r.status, r.opaque), (0x81, 5));
    // A 2 MiB SET: refused as soon as the header arrives, before the body is sent.
    let value = vec![b'x'; 2 << 20];
    let packet = bin_request(0x01, b"huge", &[0; 8], &value, 6, 0);
    // Header, extras and key: enough to refuse (and unlink the key), none of the value.
    c.send(&packet[..24 + 8 + 4]).await;
    let r = c.read_bin().await;
    assert_eq!((r.status, r.opaque), (0x03, 6));
    c.send(&packet[24 + 8 + 4..]).await;
    c.send(&bin_request(0x0a, b"", &[], &[], 7, 0)).await;
    let r = c.read_bin().await;
    assert_eq!(
        (r.opcode, r.opaque, r.status),
        (0x0a, 7, 0),
        "stream stays in sync"
    );
}

#[tokio::test]
async fn text_bad_input_keeps_connection_usable() {
    let node = start_node(None, false, |_| {}).await;
    let mut c = connect(node.plain.unwrap()).await;
    c.expect(b"bogus command\r\n", b"ERROR\r\n").await;
    c.expect(b"\r\n", b"ERROR\r\n").await;
    c.expect(
        b"set k 0 0 notanumber\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    c.expect(
        b"set k 0 0 3\r\nabcdef\r\n",
        b"CLIENT_ERROR bad data chunk\r\n",
    )
    .await;
    // Whatever followed the bad chunk is parsed as commands; resync on a fresh line.
    c.send(b"version\r\n").await;
    let mut seen = Vec::new();
    while !(String::from_utf8_lossy(&seen).contains("VERSION") && seen.ends_with(b"\r\n")) {
        seen.extend(c.read_exact(1).await);
    }
    let long_key = "k".repeat(251);
    c.expect(
        format!("get {long_key}\r\n").as_bytes(),
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    // Over-size set: error, value swallowed, stream in sync, old value gone.
    c.expect(b"set big 0 0 1\r\nx\r\n", b"STORED\r\n").await;
    let mut req = format!("set big 0 0 {}\r\n", 1 << 20).into_bytes();
    req.extend(vec![b'y'; 1 << 20]);
    req.extend(b"\r\nget big\r\n");
    c.expect(&req, b"SERVER_ERROR object too large for cache\r\nEND\r\n")
        .await;
}

#[tokio::test]
async fn overlong_line_closes_connection() {
    let node = start_node(None, false, |_| {}).await;
    let mut c = connect(node.plain.unwrap()).await;
    c.send(&vec![b'a'; 4096]).await;
    let rest = c.read_to_close().await;
    assert!(!String::from_utf8_lossy(&rest).contains("STORED"));
}

#[tokio::test]
async fn tls_listener_serves_large_value_then_pipelined_get() {
    let node = start_node(Some(&two_caches()), true, |_| {}).await;
    let ca = node.ca_pem.clone().unwrap();
    let mut c = connect_tls(node.tls.unwrap(), &ca, "localhost").await;
    c.expect(b"set alice 0 0 12\r\nalice-secret\r\n", b"STORED\r\n")
        .await;
    // memcached -Z stalls on exactly this burst: a 40 KB set then a get.
    set_and_get_in_one_burst(&mut c, "big", 0, &[b'v'; 40_000]).await;
}

#[tokio::test]
async fn max_connections_refuses_cleanly() {
    let node = start_node(None, false, |c| c.max_connections = 2).await;
    let mut a = connect(node.plain.unwrap()).await;
    let mut b = connect(node.plain.unwrap()).await;
    a.expect(
        b"version\r\n",
        format!("VERSION {}\r\n", memgate::VERSION).as_bytes(),
    )
    .await;
    b.expect(
        b"version\r\n",
        format!("VERSION {}\r\n", memgate::VERSION).as_bytes(),
    )
    .await;
    let mut c = connect(node.plain.unwrap()).await;
    let got = c.read_to_close().await;
    assert_eq!(got, b"SERVER_ERROR too many open connections\r\n");
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut d = connect(node.plain.unwrap()).await;
    d.expect(
        b"version\r\n",
        format!("VERSION {}\r\n", memgate::VERSION).as_bytes(),
    )
    .await;
}

#[tokio::test]
async fn client_that_never_reads_is_not_buffered_without_bound() {
    let node = start_node(None, false, |_| {}).await;
    let mut c = connect(node.plain.unwrap()).await;
    let mut set = b"set big 0 0 500000\r\n".to_vec();
    set.extend(vec![b'x'; 500_000]);
    set.extend(b"\r\n");
    c.expect(&set, b"STORED\r\n").await;
    let before = process::own_rss_kib() * 1024;
    // 20,000 gets would be ~10 GB of replies; never read them.
    let burst = b"get big\r\n".repeat(20_000);
    let _ = tokio::time::timeout(Duration::from_secs(3), c.send(&burst)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = (process::own_rss_kib() * 1024).saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "node buffered {grown} bytes for a client that never reads"
    );
}

/// `stats cachedump` lists the caller's own cache only, in
/// memcached's `ITEM <key> [<bytes> b; <exptime> s]` form (its class 1: the
/// store has no other), within the limit; deleted and expired items are not
/// listed. Over binary, one packet per item: its key, and the bracket.
#[tokio::test]
async fn stats_cachedump_lists_the_callers_own_items() {
    let node = start_node(Some(&two_caches()), false, |_| {}).await;
    let addr = node.plain.unwrap();
    let mut alice = connect(addr).await;
    alice
        .expect(b"set alice 0 0 12\r\nalice-secret\r\n", b"STORED\r\n")
        .await;
    let mut bob = connect(addr).await;
    bob.expect(b"set bob 0 0 10\r\nbob secret\r\n", b"STORED\r\n")
        .await;
    bob.expect(b"set bobs 0 0 1\r\nb\r\n", b"STORED\r\n").await;

    alice.expect(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n").await;
    alice.expect(b"set b 0 0 3\r\nxyz\r\n", b"STORED\r\n").await;
    alice
        .expect(b"set gone 0 0 1\r\nx\r\n", b"STORED\r\n")
        .await;
    alice.expect(b"delete gone\r\n", b"DELETED\r\n").await;
    alice
        .expect(b"set old 0 -1 1\r\nx\r\n", b"STORED\r\n")
        .await;
    let exptime = memgate::clock::unix_now() + 1000;
    alice
        .expect(b"set c 0 1000 2\r\nxy\r\n", b"STORED\r\n")
        .await;
    // The exptime is absolute, as memcached prints it; a second may pass.
    // Items come shard by shard, so their order is not asserted.
    let sorted = |reply: String| {
        let mut lines: Vec<String> = reply.split_inclusive("\r\n").map(String::from).collect();
        let end = lines.pop();
        assert_eq!(end.as_deref(), Some("END\r\n"), "{reply:?}");
        lines.sort();
        lines.concat()
    };
    let all = sorted(dump(&mut alice, "1 0").await);
    let want =
        |e: u64| format!("ITEM a [1 b; 0 s]\r\nITEM b [3 b; 0 s]\r\nITEM c [2 b; {e} s]\r\n");
    assert!(all == want(exptime) || all == want(exptime + 1), "{all:?}");
    let one = sorted(dump(&mut alice, "1 1").await);
    assert!(
        one.starts_with("ITEM ") && all.contains(&one) && one.lines().count() == 1,
        "{one:?}"
    );
    alice.expect(b"stats cachedump 2 0\r\n", b"END\r\n").await;
    // A base64 key ("a b\n") that would break the line is listed in base64.
    bob.expect(b"ms YSBiCg== 1 b\r\nx\r\n", b"HD\r\n").await;
    assert_eq!(
        sorted(dump(&mut bob, "1 0").await),
        "ITEM YSBiCg== [1 b; 0 s]\r\nITEM bobs [1 b; 0 s]\r\n"
    );
}

/// The reply to `stats cachedump <args>`.
async fn dump<S>(client: &mut Client<S>, args: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    client
        .send(format!("stats cachedump {args}\r\n").as_bytes())
        .await;
    let mut reply = Vec::new();
    while !reply.ends_with(b"END\r\n") && !reply.ends_with(b"ERROR\r\n") {
        reply.extend(client.read_exact(1).await);
    }
    String::from_utf8(reply).unwrap()
}
