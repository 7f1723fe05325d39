//! `memgate bench --check` must be able to fail: against a fake memcached
//! that returns a key's previous value, another key's value, a corrupt byte,
//! drops acknowledged writes or reorders replies, each kind is detected and
//! counted; against a correct fake and a real memcached, in all three
//! dialects with pipelining, quiet requests and multi-key gets, there are
//! none. The real binary exits 1 on a violation and 0 otherwise.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use memgate::bench::check::{CheckOptions, KeyMode, Kind};
use memgate::bench::{self, BenchConfig, Protocol, Report, Stop};
use memgate::protocol::{self, Command, Dialect, Found, Limits, Parsed, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the fake server gets wrong, once in every [`FAULT_EVERY`] chances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    /// A get returns the key's previous value.
    Stale,
    /// A get returns another key's value.
    Foreign,
    /// A get returns the value with one byte changed.
    Corrupt,
    /// A set is acknowledged and not stored.
    DropWrite,
    /// A reply is written after the next one.
    Reorder,
    /// An item is evicted (and counted in `stats`).
    Evict,
    /// A set is acknowledged and not stored, and `stats` is refused, so
    /// nothing can tell a lost write from an eviction.
    DropWriteNoStats,
}

const FAULT_EVERY: u64 = 25;

/// A memcached in miniature: the crate's own request parser and reply
/// encoder (so it speaks text, meta and binary, quiet rules included) over a
/// map that keeps every key's history.
struct Fake {
    fault: Fault,
    items: Mutex<HashMap<Bytes, Vec<Bytes>>>,
    evictions: AtomicU64,
    started: Instant,
}

async fn start_fake(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = Arc::new(Fake {
        fault,
        items: Mutex::new(HashMap::new()),
        evictions: AtomicU64::new(0),
        started: Instant::now(),
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(Arc::clone(&fake), stream));
        }
    });
    addr
}

async fn serve(fake: Arc<Fake>, mut stream: TcpStream) {
    let mut buf = BytesMut::new();
    let mut dialect = None;
    let mut chances = 0u64;
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let dialect = *dialect.get_or_insert_with(|| Dialect::detect(buf[0]));
        let mut out = BytesMut::new();
        // A reply held back to be written after the next one.
        let mut held: Option<BytesMut> = None;
        loop {
            let (request, used) = match protocol::parse(dialect, &buf, &Limits::default()) {
                Ok(Parsed::Request(request, used)) => (request, used),
                Ok(Parsed::Incomplete) => break,
                other => panic!("the fake cannot read {other:?}"),
            };
            let _ = buf.split_to(used);
            chances += 1;
            let faulty = chances % FAULT_EVERY == 0;
            let response = fake.execute(&request.command, faulty);
            let mut reply = BytesMut::new();
            let key = request.command.key().cloned();
            protocol::encode(&request.frame, key.as_deref(), &response, &mut reply);
            if let Some(earlier) = held.take() {
                out.extend_from_slice(&reply);
                out.extend_from_slice(&earlier);
            } else if fake.fault == Fault::Reorder && faulty && !reply.is_empty() {
                held = Some(reply);
            } else {
                out.extend_from_slice(&reply);
            }
        }
        if let Some(earlier) = held.take() {
            out.extend_from_slice(&earlier);
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

impl Fake {
    fn execute(&self, command: &Command, faulty: bool) -> Response {
        let mut items = self.items.lock().unwrap();
        match command {
            Command::Store(store) => {
                let drop = matches!(self.fault, Fault::DropWrite | Fault::DropWriteNoStats);
                if faulty && self.fault == Fault::Evict {
                    // Evict the key just written, after acknowledging it.
                    items.remove(&store.key);
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                } else if !(faulty && drop) {
                    items
                        .entry(store.key.clone())
                        .or_default()
                        .push(store.data.clone());
                }
                Response::Stored { cas: 1 }
            }
            Command::Delete(delete) => match items.remove(&delete.key) {
                Some(_) => Response::Deleted,
                None => Response::NotFound,
            },
            Command::Get(get) => {
                let found = get
                    .keys
                    .iter()
                    .map(|key| {
                        let history = items.get(key)?;
                        let mut data = history.last()?.clone();
                        if faulty {
                            match self.fault {
                                Fault::Stale if history.len() >= 2 => {
                                    data = history[history.len() - 2].clone();
                                }
                                Fault::Foreign => {
                                    if let Some(other) = items
                                        .iter()
                                        .find(|(k, v)| *k != key && !v.is_empty())
                                        .and_then(|(_, v)| v.last())
                                    {
                                        data = other.clone();
                                    }
                                }
                                Fault::Corrupt => {
                                    let mut bytes = data.to_vec();
                                    let middle = bytes.len() / 2;
                                    bytes[middle] ^= 1;
                                    data = Bytes::from(bytes);
                                }
                                _ => {}
                            }
                        }
                        Some(Found {
                            key: key.clone(),
                            data,
                            ..Found::default()
                        })
                    })
                    .collect();
                Response::Get(found)
            }
            Command::Noop => Response::Noop,
            Command::Stats { .. } if self.fault == Fault::DropWriteNoStats => {
                Response::Error(protocol::ErrorReply::UnknownCommand)
            }
            Command::Stats { group: None } => Response::Stats(vec![
                ("pid".into(), "4242".into()),
                (
                    "uptime".into(),
                    self.started.elapsed().as_secs().to_string(),
                ),
                (
                    "evictions".into(),
                    self.evictions.load(Ordering::Relaxed).to_string(),
                ),
            ]),
            _ => Response::Error(protocol::ErrorReply::UnknownCommand),
        }
    }
}

fn config(addr: SocketAddr, protocol: Protocol, options: CheckOptions) -> BenchConfig {
    let mut c = BenchConfig::new(addr.to_string());
    c.protocol = protocol;
    c.connections = 2;
    c.pipeline = 8;
    c.key_space = 100;
    c.ratio = (1, 1);
    c.stop = Stop::Requests(3000);
    // The test machine is shared and slow: no reply should time out.
    c.timeout = Duration::from_secs(10);
    c.check = Some(options);
    c
}

fn counts(report: &Report) -> HashMap<&'static str, u64> {
    let check = report.check.as_ref().expect("a check report");
    Kind::ALL
        .iter()
        .map(|&k| (k.name(), check.count(k)))
        .collect()
}

async fn check(addr: SocketAddr, protocol: Protocol, options: CheckOptions) -> Report {
    bench::run(config(addr, protocol, options)).await.unwrap()
}

const DIALECTS: [Protocol; 3] = [Protocol::Text, Protocol::Binary, Protocol::Meta];

/// Every way of reading: plain, quiet, and gets of several keys.
fn variants() -> Vec<CheckOptions> {
    vec![
        CheckOptions::default(),
        CheckOptions {
            quiet: true,
            multiget: 4,
            ..CheckOptions::default()
        },
        CheckOptions {
            keys: KeyMode::Shared,
            quiet: true,
            multiget: 3,
            ..CheckOptions::default()
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_fake_gives_no_violations() {
    let addr = start_fake(Fault::None).await;
    for protocol in DIALECTS {
        for options in variants() {
            let report = check(addr, protocol, options.clone()).await;
            let check = report.check.as_ref().unwrap();
            assert_eq!(check.violations(), 0, "{protocol:?} {options:?}: {report}");
            assert!(check.tally.verified > 500, "{protocol:?}: {report}");
            assert!(check.failure().is_none());
            assert_eq!(check.errors(), 0, "{report}");
            // The fake's stats were read: misses could have been judged.
            assert!(check.server.available, "{report}");
        }
    }
}

/// Fewer keys than connections: each connection still gets a key of its
/// own, and every write has a sequence number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_keys_than_connections() {
    let addr = start_fake(Fault::None).await;
    let mut c = config(addr, Protocol::Text, CheckOptions::default());
    c.key_space = 2;
    c.connections = 4;
    let report = bench::run(c).await.unwrap();
    let check = report.check.as_ref().unwrap();
    assert_eq!(check.violations(), 0, "{report}");
    assert!(check.tally.verified > 100, "{report}");
}

/// Run `fault` in every dialect; `kind` must be counted in each.
async fn detects(fault: Fault, kind: Kind) {
    let addr = start_fake(fault).await;
    for protocol in DIALECTS {
        let report = check(addr, protocol, CheckOptions::default()).await;
        let found = counts(&report);
        assert!(found[kind.name()] > 0, "{fault:?} {protocol:?}: {report}");
        let check = report.check.as_ref().unwrap();
        assert!(check.failure().is_some(), "{report}");
        let json = report.to_json();
        assert_eq!(json["check"][kind.name()], found[kind.name()]);
        assert_eq!(json["check"]["passed"], false);
        assert!(
            check
                .tally
                .examples
                .iter()
                .any(|e| e.starts_with(kind.name())),
            "no example of {kind:?}: {:?}",
            check.tally.examples
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_value_is_stale() {
    detects(Fault::Stale, Kind::Stale).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_keys_value_is_foreign() {
    detects(Fault::Foreign, Kind::Foreign).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_byte_is_corrupt() {
    detects(Fault::Corrupt, Kind::Corrupt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_write_is_lost() {
    // A dropped first write reads back as a miss (lost); a dropped later one
    // as the value before it (stale).
    detects(Fault::DropWrite, Kind::Lost).await;
}

/// Misses the server's stats explain, or cannot rule out, are reported
/// but are not `lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evictions_and_unknown_stats_explain_misses() {
    for (fault, why) in [
        (Fault::Evict, "evictions"),
        (Fault::DropWriteNoStats, "unknown server stats"),
    ] {
        let addr = start_fake(fault).await;
        for protocol in DIALECTS {
            let report = check(addr, protocol, CheckOptions::default()).await;
            let check = report.check.as_ref().unwrap();
            assert_eq!(
                check.count(Kind::Lost),
                0,
                "{fault:?} {protocol:?}: {report}"
            );
            assert!(
                check.tally.miss_after_ack > 0,
                "{fault:?} {protocol:?}: {report}"
            );
            let explained = check.server.explains_misses().unwrap_or_default();
            assert!(explained.contains(why), "{fault:?}: {explained}");
            assert!(
                check
                    .tally
                    .examples
                    .iter()
                    .any(|e| e.starts_with("miss explained:")),
                "{:?}",
                check.tally.examples
            );
            if fault == Fault::Evict {
                assert_eq!(check.violations(), 0, "{report}");
                assert!(check.failure().is_none());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_replies_are_out_of_order() {
    detects(Fault::Reorder, Kind::OutOfOrder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_quiet_and_multi_key_replies_are_out_of_order() {
    let addr = start_fake(Fault::Reorder).await;
    for protocol in DIALECTS {
        let options = CheckOptions {
            quiet: true,
            multiget: 4,
            ..CheckOptions::default()
        };
        let report = check(addr, protocol, options).await;
        assert!(
            counts(&report)["out_of_order"] > 0,
            "{protocol:?}: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_memcached_gives_no_violations() {
    let dir = tempfile::tempdir().unwrap();
    let memcached = common::start_memcached(dir.path(), &[], &[]);
    for protocol in DIALECTS {
        for options in variants() {
            let mut c = config(memcached.addr, protocol, options.clone());
            c.pipeline = 16;
            c.connections = 4;
            c.prefill = true;
            let report = bench::run(c).await.unwrap();
            let check = report.check.as_ref().unwrap();
            assert_eq!(check.violations(), 0, "{protocol:?} {options:?}: {report}");
            assert!(check.tally.verified > 500, "{report}");
            assert_eq!(check.errors(), 0, "{report}");
            // memcached's stats were read, and it evicted nothing.
            assert!(check.server.available, "{report}");
            assert_eq!(check.server.explains_misses(), None, "{report}");
            // With prefill, a miss can only follow an acknowledged delete.
            assert!(report.stats.hits > 0, "{report}");
        }
    }
}

/// The real binary: exit 1 and the counts in JSON on a violation, exit 0
/// on none; `--check-max-errors 0` fails on errors alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_non_zero_on_a_violation() {
    let bad = start_fake(Fault::Stale).await;
    let good = start_fake(Fault::None).await;
    let run = |addr: SocketAddr, extra: &'static [&'static str]| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(common::process::BIN)
                .args(["bench", "--server", &addr.to_string(), "--check", "--json"])
                .args(["--protocol", "meta", "--requests", "2000", "--ratio", "1:1"])
                .args(["--key-space", "50", "--pipeline", "4", "--timeout", "10s"])
                .args(extra)
                .output()
                .unwrap()
        })
    };
    let failed = run(bad, &[]).await.unwrap();
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let json: serde_json::Value = serde_json::from_slice(&failed.stdout).unwrap();
    assert!(json["check"]["stale"].as_u64().unwrap() > 0, "{json}");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("check failed"));
    let passed = run(good, &[]).await.unwrap();
    assert_eq!(passed.status.code(), Some(0), "{passed:?}");
    let json: serde_json::Value = serde_json::from_slice(&passed.stdout).unwrap();
    assert_eq!(json["check"]["violations"], 0, "{json}");
    assert_eq!(json["check"]["passed"], true, "{json}");
    // Errors alone: a server that refuses every get with ERROR.
    let refusing = start_refusing().await;
    let errors = run(refusing, &["--check-max-errors", "0"]).await.unwrap();
    assert_eq!(errors.status.code(), Some(1), "{errors:?}");
    let json: serde_json::Value = serde_json::from_slice(&errors.stdout).unwrap();
    assert_eq!(json["check"]["violations"], 0, "{json}");
    assert!(json["check"]["errors"].as_u64().unwrap() > 0, "{json}");
    let tolerated = run(refusing, &[]).await.unwrap();
    assert_eq!(tolerated.status.code(), Some(0), "{tolerated:?}");
}

/// A server that answers every line with `ERROR` (stats included).
async fn start_refusing() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                loop {
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let mut out = Vec::new();
                    // One ERROR per request: a meta set is two lines, but
                    // its data line is not a request.
                    while let Ok(Parsed::Request(_, used) | Parsed::Reject { consumed: used, .. }) =
                        protocol::parse(Dialect::Text, &buf, &Limits::default())
                    {
                        let _ = buf.split_to(used);
                        out.extend_from_slice(b"ERROR\r\n");
                    }
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}
