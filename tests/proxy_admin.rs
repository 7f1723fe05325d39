//! Every command of memcached's protocol.txt and protocol-binary.txt sent
//! through the sidecar while other clients pipeline multi-key gets: each
//! command gets its own reply (a sentinel sent after it comes back next, on
//! a connection still open), and no command can mark a node down, fail an
//! upstream connection, or turn another client's hit into a miss.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use memgate::proxy::upstream::UpstreamProtocol;

/// Text commands, each sent whole, and how their reply starts (the
/// sidecar's answer, memcached's where it carries the command); replies are
/// collected up to the `mn` sentinel's `MN`. `flush_all` is left out on purpose: it empties the
/// cache for every client, which is what it is for. `quit` and `shutdown`
/// close or refuse as their own test says (`tests/proxy.rs`).
const TEXT: &[(&str, &str)] = &[
    ("set k 0 0 1\r\nv\r\n", "STORED"),
    ("add k2 0 0 1\r\nv\r\n", "STORED"),
    ("replace k 0 0 1\r\nw\r\n", "STORED"),
    ("append k 0 0 1\r\nx\r\n", "STORED"),
    ("prepend k 0 0 1\r\ny\r\n", "STORED"),
    ("cas k 0 0 1 1\r\nz\r\n", "EXISTS"),
    ("get k\r\n", "VALUE k 0 3"),
    ("gets k k2\r\n", "VALUE k 0 3 "),
    ("gat 0 k\r\n", "VALUE k 0 3"),
    ("gats 0 k k2\r\n", "VALUE k 0 3 "),
    ("touch k 0\r\n", "TOUCHED"),
    ("set n 0 0 1\r\n5\r\n", "STORED"),
    ("incr n 1\r\n", "6"),
    ("decr n 1\r\n", "5"),
    ("delete k2\r\n", "DELETED"),
    ("delete k2 noreply\r\n", "MN"),
    ("mg k v f t c k s\r\n", "VA 3 f0 t-1 c"),
    ("ms k 1 T0 F3\r\nv\r\n", "HD"),
    ("ms k 1 MA\r\nw\r\n", "HD"),
    ("md k3 q\r\n", "NF"),
    ("md k3\r\n", "NF"),
    ("ma n\r\n", "HD"),
    ("ma n MD D2 v\r\n", "VA 1"),
    ("mn\r\n", "MN"),
    ("me k\r\n", "ME k exp=-1"),
    ("slabs reassign 1 2\r\n", "ERROR"),
    (
        "slabs automove 1\r\n",
        "CLIENT_ERROR slabs automove not allowed",
    ),
    ("lru tune 10 10 0.1 2\r\n", "ERROR"),
    ("lru mode flat\r\n", "ERROR"),
    ("lru temp_ttl 0\r\n", "ERROR"),
    ("lru_crawler enable\r\n", "ERROR"),
    ("lru_crawler disable\r\n", "ERROR"),
    ("lru_crawler sleep 100\r\n", "ERROR"),
    ("lru_crawler tocrawl 10\r\n", "ERROR"),
    ("lru_crawler crawl all\r\n", "ERROR"),
    ("lru_crawler metadump all\r\n", "ERROR"),
    ("lru_crawler mgdump all\r\n", "ERROR"),
    ("watch fetchers\r\n", "ERROR"),
    ("watch mutations evictions connevents\r\n", "ERROR"),
    ("stats\r\n", "STAT pid "),
    ("stats settings\r\n", "STAT maxbytes "),
    ("stats items\r\n", "STAT items:1:number "),
    ("stats slabs\r\n", "STAT 1:"),
    ("stats sizes\r\n", "STAT sizes_status disabled"),
    ("stats sizes_enable\r\n", "ERROR"),
    ("stats sizes_disable\r\n", "ERROR"),
    ("stats conns\r\n", "END"),
    ("stats extstore\r\n", "ERROR"),
    ("stats detail on\r\n", "OK"),
    ("stats detail off\r\n", "OK"),
    (
        "stats detail dump\r\n",
        "CLIENT_ERROR stats detail dump not supported through memgate proxy",
    ),
    ("stats reset\r\n", "RESET"),
    ("stats cachedump 1 0\r\n", "ITEM "),
    ("stats cachedump\r\n", "CLIENT_ERROR bad command line"),
    ("stats nonsense\r\n", "ERROR"),
    ("version\r\n", "VERSION "),
    ("verbosity 1\r\n", "OK"),
    ("verbosity 1 noreply\r\n", "MN"),
    (
        "verbosity invalid\r\n",
        "CLIENT_ERROR bad command line format",
    ),
    (
        "cache_memlimit 50\r\n",
        "CLIENT_ERROR cache_memlimit not allowed",
    ),
    ("misbehave\r\n", "ERROR"),
    ("debugtime 1\r\n", "ERROR"),
    ("extstore recache_rate 100\r\n", "ERROR"),
    ("shutdown graceful\r\n", "ERROR"),
    ("no_such_command\r\n", "ERROR"),
    ("get\r\n", "ERROR"),
];

/// Binary opcodes of protocol-binary.txt (and the range and TAP ones it
/// lists), each sent with a plausible key, extras and value; Quit and
/// Flush (and their quiet forms) are left out for the reasons above.
fn binary_requests() -> Vec<(u8, u32, Vec<u8>)> {
    let flags_exp = [0u8; 8];
    let delta = {
        let mut e = vec![0u8; 20];
        e[7] = 1;
        e
    };
    let exp = [0u8; 4];
    let mut out = Vec::new();
    for opcode in 0u8..=0x48 {
        if matches!(opcode, 0x07 | 0x08 | 0x17 | 0x18) {
            continue;
        }
        let (key, extras, value): (&[u8], &[u8], &[u8]) = match opcode {
            0x01..=0x03 | 0x11..=0x13 => (b"bk", &flags_exp, b"v"),
            0x05 | 0x06 | 0x15 | 0x16 => (b"bn", &delta, b""),
            0x0e | 0x0f | 0x19 | 0x1a => (b"bk", b"", b"x"),
            0x1b => (b"", &exp, b""),
            0x1c..=0x1e | 0x23 | 0x24 => (b"bk", &exp, b""),
            0x10 => (b"", b"", b""),
            0x20 => (b"", b"", b""),
            0x21 | 0x22 => (b"PLAIN", b"", b"\0u\0p"),
            _ => (b"bk", b"", b""),
        };
        let opaque = 0x100 + u32::from(opcode);
        out.push((
            opcode,
            opaque,
            bin_request(opcode, key, extras, value, opaque, 0),
        ));
    }
    for group in [
        "settings",
        "items",
        "slabs",
        "sizes",
        "conns",
        "reset",
        "detail on",
        "detail off",
        "detail dump",
        "cachedump 1 0",
    ] {
        out.push((
            0x10,
            0x200,
            bin_request(0x10, group.as_bytes(), &[], &[], 0x200, 0),
        ));
    }
    out
}

#[tokio::test]
async fn every_command_is_answered_for_its_client_alone() {
    every_command_through(UpstreamProtocol::Auto, &[]).await;
}

/// Over binary to the nodes (as in front of `memcached -S`), what binary
/// cannot carry is refused for its client alone.
#[tokio::test]
async fn every_command_is_answered_for_its_client_alone_over_binary() {
    every_command_through(UpstreamProtocol::Binary, BINARY_DIFFERS).await;
}

/// Where the reply over a binary upstream starts otherwise.
const BINARY_DIFFERS: &[(&str, &str)] = &[
    (
        "mg k v f t c k s\r\n",
        "CLIENT_ERROR meta flag t (remaining TTL) not supported through memgate proxy to a \
         binary-only node",
    ),
    (
        "me k\r\n",
        "CLIENT_ERROR me (meta debug) not supported through memgate proxy to a binary-only node",
    ),
    // The node's binary STAT answers a malformed group as unknown.
    ("stats cachedump\r\n", "ERROR"),
];

async fn every_command_through(protocol: UpstreamProtocol, differs: &[(&str, &str)]) {
    let pki = TestPki::new();
    let nodes = start_tls_nodes(&pki, 3).await;
    let mut config = proxy_config(&server_entries(&nodes), &pki.ca_pem());
    config.upstream_protocol = protocol;
    let proxy = start_proxy(config).await;

    // Others: pipelined multi-key gets over keys spread on every node,
    // each reply checked in full, until the commands are done.
    let keys: Vec<String> = (0..30).map(|i| format!("other{i}")).collect();
    let mut setup = connect(proxy.addr).await;
    for key in &keys {
        setup
            .expect(
                format!("set {key} 0 0 4\r\n{key:.4}\r\n").as_bytes(),
                b"STORED\r\n",
            )
            .await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let mut others = Vec::new();
    for _ in 0..4 {
        let (stop, rounds, keys) = (stop.clone(), rounds.clone(), keys.clone());
        let addr = proxy.addr;
        others.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            let request = format!("get {}\r\n", keys.join(" "));
            let mut want = Vec::new();
            for key in &keys {
                want.extend(format!("VALUE {key} 0 4\r\n{key:.4}\r\n").bytes());
            }
            want.extend(b"END\r\n");
            let pipelined = request.repeat(4);
            while !stop.load(Ordering::Relaxed) {
                c.send(pipelined.as_bytes()).await;
                for _ in 0..4 {
                    let got = c.read_exact(want.len()).await;
                    assert_eq!(
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&want)
                    );
                }
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Text: each command, then `mn`; everything up to `MN` is its reply.
    // Three rounds, as a burst of `stats reset`s once marked nodes down.
    let mut admin = connect(proxy.addr).await;
    for _round in 0..3 {
        for &(command, starts) in TEXT {
            let starts = differs
                .iter()
                .find(|(c, _)| *c == command)
                .map_or(starts, |(_, s)| s);
            admin.send(command.as_bytes()).await;
            admin.send(b"mn\r\n").await;
            // `mn` itself answers MN before the sentinel's.
            let sentinels = if command == "mn\r\n" { 2 } else { 1 };
            let mut reply = Vec::new();
            let ends = |reply: &[u8]| {
                reply.starts_with(b"MN\r\n") as usize
                    + reply.windows(5).filter(|w| w == b"\nMN\r\n").count()
            };
            while !reply.ends_with(b"MN\r\n") || ends(&reply) < sentinels {
                reply.extend(admin.read_exact(1).await);
            }
            let text = String::from_utf8_lossy(&reply);
            assert!(
                text.starts_with(starts) && !text.contains("SERVER_ERROR"),
                "{command:?}: {text:?}"
            );
        }
    }

    // Binary: each packet, then a noop with its own opaque; every packet
    // before the noop's answers the request (same opcode and opaque).
    let mut binary = connect(proxy.addr).await;
    for (opcode, opaque, request) in binary_requests() {
        binary.send(&request).await;
        binary
            .send(&bin_request(0x0a, b"", &[], &[], 0xfeed, 0))
            .await;
        loop {
            let reply = binary.read_bin().await;
            if reply.opcode == 0x0a && reply.opaque == 0xfeed {
                break;
            }
            assert_eq!(
                (reply.opcode, reply.opaque),
                (opcode, opaque),
                "{opcode:#x}: {reply:?}"
            );
            assert_ne!(
                reply.status,
                0x84,
                "{opcode:#x}: {:?}",
                String::from_utf8_lossy(&reply.value)
            );
        }
    }

    stop.store(true, Ordering::Relaxed);
    for other in others {
        tokio::time::timeout(Duration::from_secs(10), other)
            .await
            .expect("the other clients finish")
            .expect("every other client's gets hit in full");
    }
    assert!(rounds.load(Ordering::Relaxed) > 0);
    let (_, metrics) = http_get(proxy.metrics.unwrap(), "/metrics").await;
    for line in metrics.lines() {
        if line.starts_with("memgate_proxy_upstream_errors_total") {
            assert!(line.ends_with(" 0"), "{line}");
        }
        if line.starts_with("memgate_proxy_node_up") {
            assert!(line.ends_with(" 1"), "{line}");
        }
    }
}
