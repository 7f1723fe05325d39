//! The sidecar's failure model against real processes, under steady load: a
//! `memgate proxy` process in front of `memgate node` (or `memcached -Y -Z`)
//! processes that are stopped with SIGSTOP, a node in a network namespace of
//! its own whose veth link is delayed, partitioned and healed, SIGHUP reloads
//! while clients run, a path that forgets idle connections, and
//! `memgate bench --check` judging every reply through start-up, a stopped
//! node, a killed and restarted node and reloads. See
//! docs/ARCHITECTURE.md, "Failure model of the sidecar".

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{spawn, Process};
use common::*;
use memgate::proxy::ring::Ring;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The proxy's `--timeout` in every test.
const TIMEOUT: Duration = Duration::from_secs(1);
/// What a loaded 2-core machine may add to it: scheduling, not waiting.
const SLACK: Duration = Duration::from_millis(500);
/// How soon after a node answers again its keys must serve: about one probe
/// interval (`--down-retry-delay 1s`), and scheduling.
const RECOVERY: Duration = Duration::from_secs(2);

/// Each test runs several processes under load: one test at a time keeps
/// the timings meaningful on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `memgate node` with [`proxy_cache`] and a certificate from `pki`, TLS only, on
/// `tls_listen`, behind `prefix`.
fn spawn_node(pki: &TestPki, dir: &Path, prefix: &[&str], tls_listen: &str) -> Process {
    static NODES: AtomicUsize = AtomicUsize::new(0);
    let sub = dir.join(format!("node{}", NODES.fetch_add(1, Ordering::SeqCst)));
    std::fs::create_dir(&sub).unwrap();
    let issued = pki
        .ca
        .issue_node("localhost", &["localhost", "127.0.0.1"])
        .unwrap();
    let (cert, key) = (sub.join("node.pem"), sub.join("node-key.pem"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    let caches = write_caches(&sub, "caches.toml", &proxy_cache());
    let args = [
        "node",
        "--listen",
        "none",
        "--tls-listen",
        tls_listen,
        "--cert",
        &cert.display().to_string(),
        "--key",
        &key.display().to_string(),
        "--caches",
        &caches.display().to_string(),
    ];
    spawn(prefix, &args, &[], &["tls"])
}

/// `memgate proxy` on 127.0.0.1:0 trusting `pki`, logging in as
/// `user`/`pass`, with the test's timeout and a 1 s probe interval; `extra`
/// names the servers (or the config file) and anything else.
fn spawn_proxy(pki: &TestPki, dir: &Path, user: &str, pass: &str, extra: &[&str]) -> Process {
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let ca = ca.display().to_string();
    let mut args = vec![
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--ca",
        &ca,
        "--server-name",
        "localhost",
        "--timeout",
        "1s",
        "--down-retry-delay",
        "1s",
    ];
    args.extend(extra);
    let env = [("MEMCACHIER_USERNAME", user), ("MEMCACHIER_PASSWORD", pass)];
    let proxy = spawn(&[], &args, &env, &["client", "metrics"]);
    assert!(!proxy.log().contains(pass), "password logged");
    proxy
}

/// The ring the proxy builds over `entries`: which node serves a key.
fn ring(entries: &[String]) -> Ring {
    let servers: Vec<_> = entries
        .iter()
        .map(|s| memgate::proxy::ring::parse_server_entry(s).unwrap())
        .collect();
    Ring::new(&servers).unwrap()
}

#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Stored,
    /// The hits, (key, value), up to `END`.
    Values(Vec<(String, String)>),
    ServerError(String),
    Other(String),
}

/// A text-protocol client that times each request.
struct Text {
    rd: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::net::tcp::OwnedWriteHalf,
}

impl Text {
    async fn connect(addr: SocketAddr) -> Text {
        let (rd, wr) = TcpStream::connect(addr).await.unwrap().into_split();
        Text {
            rd: tokio::io::BufReader::new(rd),
            wr,
        }
    }

    /// Send `request`: the reply, and how long it took.
    async fn call(&mut self, request: &str) -> (Reply, Duration) {
        let sent = Instant::now();
        self.wr.write_all(request.as_bytes()).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), self.reply())
            .await
            .unwrap_or_else(|_| panic!("no reply within 10 s to {request:?}"));
        (reply, sent.elapsed())
    }

    async fn reply(&mut self) -> Reply {
        let mut values = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.rd.read_line(&mut line).await.unwrap();
            assert!(n > 0, "the proxy closed the connection");
            let line = line.trim_end();
            if let Some(rest) = line.strip_prefix("VALUE ") {
                let fields: Vec<&str> = rest.split(' ').collect();
                let len: usize = fields[2].parse().unwrap();
                let mut data = vec![0; len + 2];
                self.rd.read_exact(&mut data).await.unwrap();
                data.truncate(len);
                values.push((fields[0].to_string(), String::from_utf8(data).unwrap()));
                continue;
            }
            return match line {
                "STORED" => Reply::Stored,
                "END" => Reply::Values(values),
                l if l.starts_with("SERVER_ERROR") => Reply::ServerError(l.into()),
                l => Reply::Other(l.into()),
            };
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Ok,
    Miss,
    Error,
    /// A reply that is neither the value set nor an error.
    Wrong,
}

/// One request of the load.
#[derive(Debug, Clone)]
struct Event {
    key: String,
    /// The node the full ring puts the key on.
    node: usize,
    get: bool,
    /// When the set of this set-and-get pair was sent, from the epoch.
    pair: Duration,
    /// When this request was sent, from the epoch.
    at: Duration,
    took: Duration,
    outcome: Outcome,
    /// Only read through `Debug`, in the failure messages.
    #[allow(dead_code)]
    reply: Reply,
}

/// Clients that each set and then get their own keys, in a loop.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Vec<Event>>>,
}

/// `clients` clients on connections of their own through `addr`, each
/// setting a key and then getting it, over 300 keys of its own, with a short
/// pause after each pair; every request is timed from `epoch`.
fn start_load(addr: SocketAddr, clients: usize, ring: Arc<Ring>, epoch: Instant) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let clients = (0..clients)
        .map(|id| {
            let (stop, ring) = (Arc::clone(&stop), Arc::clone(&ring));
            tokio::spawn(async move {
                let mut c = Text::connect(addr).await;
                let mut events = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("c{id}k{}", n % 300);
                    let node = ring.locate(key.as_bytes());
                    let value = format!("{id}-{n}");
                    let pair = epoch.elapsed();
                    let request = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
                    let (reply, took) = c.call(&request).await;
                    let stored = reply == Reply::Stored;
                    let outcome = match reply {
                        Reply::Stored => Outcome::Ok,
                        Reply::ServerError(_) => Outcome::Error,
                        _ => Outcome::Wrong,
                    };
                    events.push(Event {
                        key: key.clone(),
                        node,
                        get: false,
                        pair,
                        at: pair,
                        took,
                        outcome,
                        reply,
                    });
                    let at = epoch.elapsed();
                    let (reply, took) = c.call(&format!("get {key}\r\n")).await;
                    let outcome = match &reply {
                        Reply::Values(v) if v.is_empty() => Outcome::Miss,
                        Reply::Values(v) if v.len() == 1 && v[0].0 == key => {
                            // A set that timed out may or may not have been
                            // applied: then any value of the key will do.
                            if v[0].1 == value || !stored {
                                Outcome::Ok
                            } else {
                                Outcome::Wrong
                            }
                        }
                        Reply::ServerError(_) => Outcome::Error,
                        _ => Outcome::Wrong,
                    };
                    events.push(Event {
                        key,
                        node,
                        get: true,
                        pair,
                        at,
                        took,
                        outcome,
                        reply,
                    });
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                events
            })
        })
        .collect();
    Load { stop, clients }
}

impl Load {
    /// Stop the clients: every request they made, in the order sent.
    async fn finish(self) -> Vec<Event> {
        self.stop.store(true, Ordering::SeqCst);
        let mut events = Vec::new();
        for client in self.clients {
            events.extend(client.await.expect("a client"));
        }
        events.sort_by_key(|e| e.at);
        events
    }
}

/// Every request was answered within the timeout (and the slack).
fn assert_answered_in_time(events: &[Event]) {
    let slowest = events.iter().max_by_key(|e| e.took).expect("some requests");
    assert!(
        slowest.took <= TIMEOUT + SLACK,
        "answered after {:?} with --timeout {TIMEOUT:?}: {slowest:?}",
        slowest.took
    );
}

/// No request for a key of `nodes` failed, in any way.
fn assert_never_failed(events: &[Event], nodes: &[usize]) {
    let theirs: Vec<&Event> = events.iter().filter(|e| nodes.contains(&e.node)).collect();
    let failed: Vec<&&Event> = theirs.iter().filter(|e| e.outcome != Outcome::Ok).collect();
    assert!(
        failed.is_empty(),
        "{} of the {} requests for nodes {nodes:?} failed; first: {:?}",
        failed.len(),
        theirs.len(),
        failed.first()
    );
    assert!(theirs.len() > 100, "too little load: {}", theirs.len());
}

/// How long after `healed` the keys of `node` served again for good: the
/// end of the last failed request for them (zero if none failed after it).
fn recovered_after(events: &[Event], node: usize, healed: Duration) -> Duration {
    let theirs: Vec<&Event> = events.iter().filter(|e| e.node == node).collect();
    let last_failure = theirs
        .iter()
        .filter(|e| e.outcome != Outcome::Ok)
        .map(|e| e.at + e.took)
        .max()
        .unwrap_or_default();
    let served_after = theirs
        .iter()
        .filter(|e| e.at > last_failure && e.outcome == Outcome::Ok)
        .count();
    assert!(
        served_after > 20,
        "node {node}'s keys never served again for good: {served_after} successes after the last failure at {last_failure:?}"
    );
    last_failure.saturating_sub(healed)
}

/// The events of `node`'s keys whose pair started within `from..to`.
fn during(events: &[Event], node: usize, from: Duration, to: Duration) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| e.node == node && e.pair >= from && e.pair < to)
        .collect()
}

/// A client that gets `keys` (set to `v-KEY` beforehand) in one request,
/// every 100 ms: every live node's hits must come back each time.
fn start_multi_get(
    addr: SocketAddr,
    keys: Vec<String>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<(Duration, HashMap<String, String>)>> {
    tokio::spawn(async move {
        let mut c = Text::connect(addr).await;
        for key in &keys {
            let request = format!("set {key} 0 0 {}\r\nv-{key}\r\n", key.len() + 2);
            assert_eq!(c.call(&request).await.0, Reply::Stored);
        }
        let request = format!("get {}\r\n", keys.join(" "));
        let mut replies = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let (reply, took) = c.call(&request).await;
            let Reply::Values(hits) = reply else {
                panic!("a multi-get failed as a whole: {reply:?}");
            };
            for (key, value) in &hits {
                assert_eq!(value, &format!("v-{key}"));
            }
            replies.push((took, hits.into_iter().collect()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        replies
    })
}

/// The proxy's `memgate_proxy_node_up` for `node`, every 100 ms, from `epoch`.
fn watch_node_up(
    metrics: SocketAddr,
    node: String,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<(Duration, f64)>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        let label = format!("node=\"{node}\"");
        while !stop.load(Ordering::SeqCst) {
            let (_, text) = http_get(metrics, "/metrics").await;
            if let Some(up) = sample(&text, "memgate_proxy_node_up", &[&label]) {
                samples.push((epoch.elapsed(), up));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        samples
    })
}

/// The sum of `name` over every series of `node`.
fn total(metrics: &str, name: &str, node: &str) -> f64 {
    let label = format!("node=\"{node}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Load, multi-gets and the node-up gauge of one node, watched from `epoch`
/// while a test does something to that node.
struct Watch {
    epoch: Instant,
    stop: Arc<AtomicBool>,
    load: Load,
    multi: JoinHandle<Vec<(Duration, HashMap<String, String>)>>,
    up: JoinHandle<Vec<(Duration, f64)>>,
    keys: Vec<String>,
}

/// What a watch saw.
struct Seen {
    events: Vec<Event>,
    multi: Vec<(Duration, HashMap<String, String>)>,
    keys: Vec<String>,
    up: Vec<(Duration, f64)>,
    metrics: String,
}

/// Six clients and a multi-get client through `proxy`, and the up gauge of
/// `node`.
fn watch(proxy: &Process, ring: &Arc<Ring>, node: &str) -> Watch {
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let keys: Vec<String> = (0..30).map(|i| format!("mg{i}")).collect();
    Watch {
        epoch,
        load: start_load(proxy.addr("client"), 6, Arc::clone(ring), epoch),
        multi: start_multi_get(proxy.addr("client"), keys.clone(), Arc::clone(&stop)),
        up: watch_node_up(proxy.addr("metrics"), node.into(), epoch, Arc::clone(&stop)),
        stop,
        keys,
    }
}

impl Watch {
    /// Time since the watch began.
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    async fn finish(self, proxy: &Process) -> Seen {
        let events = self.load.finish().await;
        self.stop.store(true, Ordering::SeqCst);
        Seen {
            events,
            multi: self.multi.await.unwrap(),
            keys: self.keys,
            up: self.up.await.unwrap(),
            metrics: http_get(proxy.addr("metrics"), "/metrics").await.1,
        }
    }
}

/// What a fault of node `faulty` (among `entries`) from `fault_at` until
/// `healed_at` may cost, and no more: every request is answered within the
/// timeout; the other nodes' keys never fail; the node is marked down after
/// two timeouts, and its keys then fail at once (`--failover error`) or are
/// served by the live nodes (`eject`); they serve again about a probe
/// interval after the fault ends; every multi-get has the live nodes' hits;
/// the metrics show it all. Returns the time the node was seen down.
fn assert_contained(
    seen: &Seen,
    entries: &[String],
    faulty: usize,
    fault_at: Duration,
    healed_at: Duration,
    eject: bool,
) -> Duration {
    let ring = ring(entries);
    let live: Vec<usize> = (0..entries.len()).filter(|&i| i != faulty).collect();
    let name = entries[faulty].split('=').next().unwrap();
    let events = &seen.events;
    // Two consecutive failures mark the node down: its first requests time
    // out, then the requests that wait for a connection to it do.
    let down_at = seen
        .up
        .iter()
        .find(|&&(at, v)| v == 0.0 && at > fault_at)
        .map(|&(at, _)| at)
        .unwrap_or_else(|| panic!("{name} was never reported down: {:?}", seen.up));
    let while_down = during(
        events,
        faulty,
        down_at,
        healed_at - Duration::from_millis(100),
    );
    let recovery = recovered_after(events, faulty, healed_at);
    eprintln!(
        "{} requests ({} for {name} while down), {name} down {:?} after the fault, slowest {:?}, served again {recovery:?} after the fault ended, {} multi-gets",
        events.len(),
        while_down.len(),
        down_at - fault_at,
        events.iter().map(|e| e.took).max().unwrap_or_default(),
        seen.multi.len()
    );
    assert_answered_in_time(events);
    assert_never_failed(events, &live);
    assert!(
        down_at < fault_at + 2 * TIMEOUT + SLACK,
        "{name} was marked down {:?} after the fault",
        down_at - fault_at
    );
    assert!(while_down.len() > 20, "{}", while_down.len());
    for e in &while_down {
        if eject {
            assert_eq!(
                e.outcome,
                Outcome::Ok,
                "ejected keys go to the live nodes: {e:?}"
            );
        } else {
            assert_eq!(e.outcome, Outcome::Error, "{e:?}");
            assert!(
                e.took < Duration::from_millis(300),
                "a down node's keys fail fast: {e:?}"
            );
        }
    }
    assert!(
        recovery <= RECOVERY,
        "{name} served again {recovery:?} after the fault ended"
    );

    let live_keys: Vec<&String> = seen
        .keys
        .iter()
        .filter(|k| ring.locate(k.as_bytes()) != faulty)
        .collect();
    assert!(live_keys.len() < seen.keys.len() && !live_keys.is_empty());
    for (took, hits) in &seen.multi {
        assert!(*took <= TIMEOUT + SLACK, "a multi-get took {took:?}");
        for key in &live_keys {
            assert!(hits.contains_key(*key), "{key} missing from {hits:?}");
        }
    }
    let partial = seen
        .multi
        .iter()
        .filter(|(_, hits)| hits.len() < seen.keys.len());
    assert!(partial.count() > 0, "no multi-get saw the node down");

    let metrics = &seen.metrics;
    assert_eq!(
        seen.up.last().map(|s| s.1),
        Some(1.0),
        "{name} is up at the end: {:?}",
        seen.up
    );
    let label = format!("node=\"{name}\"");
    let timeouts = sample(
        metrics,
        "memgate_proxy_upstream_errors_total",
        &[&label, "kind=\"timeout\""],
    );
    assert!(timeouts.unwrap_or(0.0) >= 2.0, "{metrics}");
    if !eject {
        let unreachable = sample(
            metrics,
            "memgate_proxy_multiget_unreachable_keys_total",
            &[&label],
        );
        assert!(unreachable.unwrap_or(0.0) > 0.0, "{metrics}");
    }
    for &i in &live {
        let other = entries[i].split('=').next().unwrap();
        assert_eq!(
            total(metrics, "memgate_proxy_upstream_errors_total", other),
            0.0,
            "no errors on {other}: {metrics}"
        );
    }
    down_at
}

/// Under load through `proxy`, stop the process `pid` serving node `stopped`
/// for 3 s, continue it, and check that the fault was contained.
async fn stop_a_node_under_load(
    proxy: &Process,
    entries: &[String],
    stopped: usize,
    pid: u32,
    eject: bool,
) {
    let ring = Arc::new(ring(entries));
    let name = entries[stopped].split('=').next().unwrap();
    let watch = watch(proxy, &ring, name);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped_at = watch.now();
    kill(pid, "STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    kill(pid, "CONT");
    let resumed_at = watch.now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = watch.finish(proxy).await;
    assert_contained(&seen, entries, stopped, stopped_at, resumed_at, eject);
}

/// Server entries naming each address by its index: "n0=127.0.0.1:port".
fn named(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<String> {
    addrs
        .into_iter()
        .enumerate()
        .map(|(i, addr)| format!("n{i}={addr}"))
        .collect()
}

/// A proxy config file in `dir`, and what rewrites it to name the first `n`
/// of `entries` as the servers (before a SIGHUP).
fn servers_file<'a>(dir: &Path, entries: &'a [String]) -> (PathBuf, impl Fn(usize) + 'a) {
    let config = dir.join("proxy.toml");
    let path = config.clone();
    let servers = move |n: usize| {
        let text = format!("servers = \"{}\"\n", entries[..n].join(","));
        std::fs::write(&path, text).unwrap();
    };
    (config, servers)
}

/// `n` `memgate node` processes on 127.0.0.1 signed by `pki`.
fn local_nodes(pki: &TestPki, dir: &Path, n: usize) -> Vec<Process> {
    (0..n)
        .map(|_| spawn_node(pki, dir, &[], "127.0.0.1:0"))
        .collect()
}

/// Stop node `stopped` of three `memgate node` processes under load, with
/// the proxy's `--failover` set to `failover`.
async fn stop_one_of_three_memgate_nodes(stopped: usize, failover: &str) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let nodes = local_nodes(&pki, dir.path(), 3);
    let entries = named(nodes.iter().map(|n| n.addr("tls")));
    let servers = entries.join(",");
    let args = ["--servers", &servers, "--failover", failover];
    let proxy = spawn_proxy(&pki, dir.path(), PROXY_USER, PROXY_PASS, &args);
    let pid = nodes[stopped].pid();
    stop_a_node_under_load(&proxy, &entries, stopped, pid, failover == "eject").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_process_fails_fast_and_serves_again_after_sigcont() {
    let _serial = SERIAL.lock().await;
    stop_one_of_three_memgate_nodes(1, "error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_process_is_ejected_and_its_keys_remapped() {
    let _serial = SERIAL.lock().await;
    stop_one_of_three_memgate_nodes(2, "eject").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_memcached_with_ascii_auth_and_tls_fails_fast_and_serves_again() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let (user, pass) = ("mguser", "mg-pass-123");
    let authfile = dir.path().join("authfile");
    std::fs::write(&authfile, format!("{user}:{pass}\n")).unwrap();
    let mut args = vec![
        "-Z".to_string(),
        "-Y".into(),
        authfile.display().to_string(),
    ];
    args.extend(memcached_tls_args(&pki, dir.path()));
    let nodes: Vec<Memcached> = (0..3)
        .map(|_| start_memcached(dir.path(), &args, &[]))
        .collect();
    let entries = named(nodes.iter().map(|m| m.addr));
    let servers = entries.join(",");
    let args = [
        "--servers",
        &servers,
        "--upstream-protocol",
        "meta-memcached",
    ];
    let proxy = spawn_proxy(&pki, dir.path(), user, pass, &args);
    stop_a_node_under_load(&proxy, &entries, 0, nodes[0].pid(), false).await;
}

/// Run `program args`; its error output if it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// A network namespace of this test run's own, reached from the host over a
/// veth pair (198.18.0.0/15, the benchmarking range, one /30 per run).
/// Dropping it deletes both, whatever the test did.
struct Netns {
    name: String,
    host_if: String,
    node_if: String,
    node_ip: String,
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let pid = std::process::id();
        let net = format!("198.{}.{}", 18 + ((pid >> 14) & 1), (pid >> 6) & 255);
        let last = (pid & 63) * 4;
        let ns = Netns {
            name: format!("memgate-faults-{pid}"),
            host_if: format!("mgf{pid}h"),
            node_if: format!("mgf{pid}n"),
            node_ip: format!("{net}.{}", last + 2),
        };
        let host_cidr = format!("{net}.{}/30", last + 1);
        let node_cidr = format!("{}/30", ns.node_ip);
        run("ip", &["netns", "add", &ns.name])?;
        run(
            "ip",
            &[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns.node_if,
            ],
        )?;
        run("ip", &["link", "set", &ns.node_if, "netns", &ns.name])?;
        run("ip", &["addr", "add", &host_cidr, "dev", &ns.host_if])?;
        run("ip", &["link", "set", &ns.host_if, "up"])?;
        ns.exec(&["ip", "addr", "add", &node_cidr, "dev", &ns.node_if])?;
        ns.exec(&["ip", "link", "set", &ns.node_if, "up"])?;
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    fn exec(&self, args: &[&str]) -> Result<(), String> {
        let mut all = self.prefix()[1..].to_vec();
        all.extend(args);
        run("ip", &all)
    }

    /// `tc qdisc ACTION dev HOST_IF root` with `netem` options.
    fn netem(&self, action: &str, options: &[&str]) -> Result<(), String> {
        let mut args = vec!["qdisc", action, "dev", &self.host_if, "root"];
        if !options.is_empty() {
            args.push("netem");
            args.extend(options);
        }
        run("tc", &args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of the pair deletes the other; the namespace
        // itself goes once its last process (the node) has been killed.
        let _ = run("ip", &["link", "del", &self.host_if]);
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_a_delayed_then_partitioned_link_is_contained_and_serves_after_healing() {
    let _serial = SERIAL.lock().await;
    // Declared first, so that it is dropped last: after the node in it.
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => {
            println!("skipped: network namespaces need root and iproute2 ({why})");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let mut nodes = local_nodes(&pki, dir.path(), 2);
    let far = format!("{}:0", ns.node_ip);
    nodes.push(spawn_node(&pki, dir.path(), &ns.prefix(), &far));
    let entries = named(nodes.iter().map(|n| n.addr("tls")));
    let servers = entries.join(",");
    let proxy = spawn_proxy(
        &pki,
        dir.path(),
        PROXY_USER,
        PROXY_PASS,
        &["--servers", &servers],
    );
    let ring = Arc::new(ring(&entries));
    let watch = watch(&proxy, &ring, "n2");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 200 ms more on the way to the node: slower, never failing.
    let delayed = match ns.netem("add", &["delay", "200ms"]) {
        Ok(()) => {
            let from = watch.now();
            tokio::time::sleep(Duration::from_secs(2)).await;
            Some((from, watch.now()))
        }
        Err(why) => {
            println!("netem unavailable ({why}): no delay phase; the partition takes the link down instead");
            None
        }
    };
    // The partition: every packet to the node lost, or its link down; the
    // host sees silence either way.
    let parted_at = watch.now();
    match delayed {
        Some(_) => ns.netem("change", &["loss", "100%"]).unwrap(),
        None => ns
            .exec(&["ip", "link", "set", &ns.node_if, "down"])
            .unwrap(),
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    match delayed {
        Some(_) => ns.netem("del", &[]).unwrap(),
        None => ns.exec(&["ip", "link", "set", &ns.node_if, "up"]).unwrap(),
    }
    let healed_at = watch.now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = watch.finish(&proxy).await;

    if let Some((from, to)) = delayed {
        // Pairs that began well inside the delay, and ended before the loss.
        let slowed = during(
            &seen.events,
            2,
            from + Duration::from_millis(100),
            to - Duration::from_millis(600),
        );
        assert!(slowed.len() > 4, "{}", slowed.len());
        for e in &slowed {
            assert_eq!(
                e.outcome,
                Outcome::Ok,
                "a delay below the timeout fails nothing: {e:?}"
            );
            assert!(
                e.took >= Duration::from_millis(195),
                "the delay applies: {e:?}"
            );
        }
    }
    assert_contained(&seen, &entries, 2, parted_at, healed_at, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_sighup_reloads_under_load_fail_no_request_and_keep_unchanged_nodes() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let nodes = local_nodes(&pki, dir.path(), 4);
    let entries = named(nodes.iter().map(|n| n.addr("tls")));
    let (config, servers) = servers_file(dir.path(), &entries);
    servers(3);
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--connections-per-node",
        "1",
    ];
    let proxy = spawn_proxy(&pki, dir.path(), PROXY_USER, PROXY_PASS, &args);
    let (three, four) = (ring(&entries[..3]), ring(&entries));
    let load = start_load(
        proxy.addr("client"),
        6,
        Arc::new(ring(&entries[..3])),
        Instant::now(),
    );
    let connects = || async {
        let metrics = http_get(proxy.addr("metrics"), "/metrics").await.1;
        let kept = ["n0", "n1", "n2"];
        kept.map(|n| total(&metrics, "memgate_proxy_upstream_connects_total", n))
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = connects().await;
    // Reloads 1-3 and 8-10 change nothing; 4 adds n3, 7 removes it again.
    for reload in 1..=10 {
        match reload {
            4 => servers(4),
            7 => servers(3),
            _ => {}
        }
        kill(proxy.pid(), "HUP");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = load.finish().await;
    let after = connects().await;

    assert_answered_in_time(&events);
    let failed: Vec<&Event> = events
        .iter()
        .filter(|e| e.outcome == Outcome::Error || e.outcome == Outcome::Wrong && !e.get)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed; first: {:?}",
        failed.len(),
        events.len(),
        failed.first()
    );
    // Keys that stay on their node whether n3 is there or not never miss
    // nor read a stale value (the others may, as they move to n3 and back).
    let stable: Vec<&Event> = events
        .iter()
        .filter(|e| three.locate(e.key.as_bytes()) == four.locate(e.key.as_bytes()))
        .collect();
    let wrong: Vec<&&Event> = stable.iter().filter(|e| e.outcome != Outcome::Ok).collect();
    assert!(
        wrong.is_empty(),
        "{} of {} failed; first: {:?}",
        wrong.len(),
        stable.len(),
        wrong.first()
    );
    assert!(stable.len() > 500, "too little load: {}", stable.len());
    assert_eq!(before, after, "the unchanged nodes kept their connections");
    assert_eq!(before, [1.0; 3], "one connection per node");
    let log = proxy.log();
    assert_eq!(log.matches("configuration reloaded").count(), 10, "{log}");
    assert!(log.contains("servers=4 kept=3"), "{log}");
    eprintln!(
        "{} requests through 10 reloads, slowest {:?}",
        events.len(),
        events.iter().map(|e| e.took).max()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_idle_past_the_nat_timeout_never_fails_the_next_request() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let node = spawn_node(&pki, dir.path(), &[], "127.0.0.1:0");
    // A NAT that silently forgets a connection idle for 2 s (no RST: from
    // then on what either side sends is dropped).
    let nat = relay(node.addr("tls"), Some(Duration::from_secs(2))).await;
    let servers = format!("n0={}", nat.addr);
    let args = [
        "--servers",
        &servers,
        "--keepalive",
        "500ms",
        "--connections-per-node",
        "1",
    ];
    let proxy = spawn_proxy(&pki, dir.path(), PROXY_USER, PROXY_PASS, &args);
    let mut c = Text::connect(proxy.addr("client")).await;
    assert_eq!(c.call("set idle 0 0 1\r\nv\r\n").await.0, Reply::Stored);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let (reply, took) = c.call("get idle\r\n").await;
        assert_eq!(reply, Reply::Values(vec![("idle".into(), "v".into())]));
        assert!(
            took < Duration::from_millis(300),
            "the first request after the idle period took {took:?}"
        );
    }
    assert_eq!(
        nat.accepted.load(Ordering::SeqCst),
        1,
        "the keepalive kept the one pooled connection alive through the NAT"
    );
}

/// `memgate bench --check` through the sidecar at `addr`, started now and
/// run for `seconds`, with gets of `multiget` keys (spread over the nodes)
/// and `extra` flags; its JSON `check` object when it ends. Each connection
/// pipelines, so every reply is judged while the test does its fault.
fn start_check(
    addr: SocketAddr,
    seconds: u64,
    multiget: usize,
    extra: &[&str],
) -> JoinHandle<serde_json::Value> {
    let mut args: Vec<String> = [
        "bench",
        "--check",
        "--json",
        "--server",
        &addr.to_string(),
        "--connections",
        "8",
        "--pipeline",
        "8",
        "--check-multiget",
        &multiget.to_string(),
        "--key-space",
        "4000",
        "--timeout",
        "5s",
        "--duration",
        &format!("{seconds}s"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let out = Command::new(common::process::BIN)
            .args(&args)
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "bench --check {args:?} printed no report: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        json["check"].clone()
    })
}

/// No reply was wrong: none older than the client's acknowledged write,
/// another's, corrupt or out of order; and misses of acknowledged writes
/// only where `lost_allowed` (keys that moved in a reload) or explained by
/// a restart.
fn assert_no_wrong_reply(check: &serde_json::Value, lost_allowed: bool) {
    for kind in ["stale", "foreign", "corrupt", "out_of_order"] {
        assert_eq!(check[kind], 0, "{kind}: {check}");
    }
    if !lost_allowed {
        assert_eq!(check["lost"], 0, "lost: {check}");
    }
    assert!(
        check["verified"].as_u64().unwrap() > 1000,
        "too little load: {check}"
    );
}

/// The checker's every reply right through the sidecar's start-up (its
/// first requests while its connections form) and while one of three nodes
/// is stopped with SIGSTOP and continued, in each dialect. Gets are of one
/// key here: a multi-key get reads a down node's keys as misses by design
/// (docs/proxy.md, "When nodes fail"), which the checker cannot tell from
/// lost writes, while a single get of such a key is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_sees_no_wrong_reply_through_start_up_and_a_stopped_node() {
    let _serial = SERIAL.lock().await;
    for (protocol, stopped) in [("text", 1), ("binary", 2), ("meta", 0)] {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new();
        let nodes = local_nodes(&pki, dir.path(), 3);
        let servers = named(nodes.iter().map(|n| n.addr("tls"))).join(",");
        let args = ["--servers", &servers];
        let proxy = spawn_proxy(&pki, dir.path(), PROXY_USER, PROXY_PASS, &args);
        let check = start_check(proxy.addr("client"), 5, 1, &["--protocol", protocol]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        kill(nodes[stopped].pid(), "STOP");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        kill(nodes[stopped].pid(), "CONT");
        let check = check.await.unwrap();
        eprintln!("{protocol}: {}", check["summary"]);
        assert_no_wrong_reply(&check, false);
        assert_eq!(check["violations"], 0, "{check}");
    }
}

/// A node killed with SIGKILL and restarted empty on the same port: the
/// keys it held miss (explained by the restart the checker sees in its
/// stats), and no reply is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_sees_no_wrong_reply_when_a_node_is_killed_and_restarted() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let mut nodes = local_nodes(&pki, dir.path(), 3);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr("tls")).collect();
    let servers = named(addrs.iter().copied()).join(",");
    let args = ["--servers", &servers];
    let proxy = spawn_proxy(&pki, dir.path(), PROXY_USER, PROXY_PASS, &args);
    let check = start_check(proxy.addr("client"), 6, 4, &["--protocol", "meta"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The sidecar's `stats` take pid and uptime from its first node: that
    // one restarts, so the checker can tell.
    nodes[0].kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    nodes[0] = spawn_node(&pki, dir.path(), &[], &addrs[0].to_string());
    let check = check.await.unwrap();
    eprintln!("kill -9: {}", check["summary"]);
    assert_no_wrong_reply(&check, false);
}

/// SIGHUP adds a fourth node while the checker runs, and a second SIGHUP
/// removes it again: no reply is another key's or client's, older than the
/// client's own write, corrupt or out of order, and no acknowledged write
/// misses. Keys that move are read from the node they left while the
/// warm-up runs (`proxy::warmup`); keys that move back find the values
/// their writes left, not the ones from before the first reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_sees_no_wrong_reply_through_reloads_that_add_and_remove_a_node() {
    let _serial = SERIAL.lock().await;
    // With replicas too: the previous ring's replicas that are not the new
    // ring's are cleared on every write and read last.
    for (protocol, replicas) in [("text", "1"), ("meta", "1"), ("meta", "2"), ("binary", "2")] {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new();
        let nodes = local_nodes(&pki, dir.path(), 4);
        let entries = named(nodes.iter().map(|n| n.addr("tls")));
        let (config, servers) = servers_file(dir.path(), &entries);
        servers(3);
        let args = [
            "--config",
            config.to_str().unwrap(),
            "--warmup-settle",
            "1s",
            "--replicas",
            replicas,
        ];
        let proxy = spawn_proxy(&pki, dir.path(), PROXY_USER, PROXY_PASS, &args);
        let check = start_check(proxy.addr("client"), 7, 4, &["--protocol", protocol]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        servers(4);
        kill(proxy.pid(), "HUP");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        servers(3);
        kill(proxy.pid(), "HUP");
        let check = check.await.unwrap();
        eprintln!(
            "{protocol} --replicas {replicas} reloads: {}",
            check["summary"]
        );
        let log = proxy.log();
        if check["passed"] != true {
            // What the warm-up gave up on, if anything, says why a key
            // missed (a previous node that timed out is read no more).
            eprintln!("the sidecar's log:\n{log}");
        }
        assert_no_wrong_reply(&check, false);
        assert!(log.contains("servers=4 kept=3"), "{log}");
        assert!(log.contains("servers=3 kept=3"), "{log}");
    }
}

/// A reload removes a node that keeps running (behind a relay), and while
/// the warm-up still reads it, the link to it loses what the sidecar sends:
/// the deletes of moved keys never reach it, so it keeps their old values.
/// The sidecar gives up on it (`memgate_proxy_warmup_abandoned_total`) and
/// never reads it again, also once the link works again: the deleted keys
/// stay deleted (its other keys miss). A stopped process is no test of
/// this: the deletes wait in its socket and run when it continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_that_lost_deletes_during_the_warm_up_is_never_read_again() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let nodes = local_nodes(&pki, dir.path(), 3);
    let link = relay(nodes[2].addr("tls"), None).await;
    let entries = named([nodes[0].addr("tls"), nodes[1].addr("tls"), link.addr]);
    let (before, after) = (ring(&entries), ring(&entries[..2]));
    let keys: Vec<String> = (0..2000).map(|i| format!("lk{i}")).collect();
    let moved: Vec<&String> = keys
        .iter()
        .filter(|k| before.locate(k.as_bytes()) != after.locate(k.as_bytes()))
        .collect();
    let (config, servers) = servers_file(dir.path(), &entries);
    servers(3);
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--warmup-settle",
        "0s",
    ];
    let proxy = spawn_proxy(&pki, dir.path(), PROXY_USER, PROXY_PASS, &args);
    let mut client = Text::connect(proxy.addr("client")).await;
    for key in &keys {
        let (reply, _) = client.call(&format!("set {key} 0 0 2\r\nv1\r\n")).await;
        assert_eq!(reply, Reply::Stored);
    }
    servers(2);
    kill(proxy.pid(), "HUP");
    reloaded(&proxy, 1).await;
    let deleted = &moved[..20];
    assert!(read_all(&mut client, &keys)
        .await
        .iter()
        .all(Option::is_some));
    link.dropping.store(true, Ordering::SeqCst);
    // Pipelined: the first delete to find the node silent gives up on it,
    // and those behind it do not wait for it.
    let deletes: String = deleted.iter().map(|k| format!("delete {k}\r\n")).collect();
    let sent = Instant::now();
    client.wr.write_all(deletes.as_bytes()).await.unwrap();
    for key in deleted {
        let reply = client.reply().await;
        assert!(
            matches!(&reply, Reply::Other(r) if r == "DELETED" || r == "NOT_FOUND"),
            "{key}: {reply:?}"
        );
    }
    assert!(sent.elapsed() < 3 * TIMEOUT, "{:?}", sent.elapsed());
    link.dropping.store(false, Ordering::SeqCst);
    let seen = read_all(&mut client, &keys).await;
    for key in deleted {
        let i = keys.iter().position(|k| k == *key).unwrap();
        assert_eq!(seen[i], None, "{key} came back");
    }
    let metrics = http_get(proxy.addr("metrics"), "/metrics").await.1;
    assert!(
        total(&metrics, "memgate_proxy_warmup_abandoned_total", "n2") >= 1.0,
        "{metrics}"
    );
}

/// With memgate nodes, a moved item read during the warm-up is copied to
/// its new node with its flags and remaining TTL, so it still hits once the
/// warm-up is over; one deleted in the window is not copied back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_items_read_in_the_warm_up_are_copied_and_hit_after_it() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let nodes = local_nodes(&pki, dir.path(), 3);
    let entries = named(nodes.iter().map(|n| n.addr("tls")));
    let (before, after) = (ring(&entries[..2]), ring(&entries));
    let keys: Vec<String> = (0..1500).map(|i| format!("ck{i}")).collect();
    let moved: Vec<usize> = (0..keys.len())
        .filter(|&i| before.locate(keys[i].as_bytes()) != after.locate(keys[i].as_bytes()))
        .collect();
    let (config, servers) = servers_file(dir.path(), &entries);
    servers(2);
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--warmup",
        "3s",
        "--warmup-settle",
        "0s",
    ];
    let proxy = spawn_proxy(&pki, dir.path(), PROXY_USER, PROXY_PASS, &args);
    let mut client = Text::connect(proxy.addr("client")).await;
    for key in &keys {
        let (reply, _) = client.call(&format!("set {key} 7 600 2\r\nv1\r\n")).await;
        assert_eq!(reply, Reply::Stored);
    }
    servers(3);
    kill(proxy.pid(), "HUP");
    reloaded(&proxy, 1).await;
    // Each read right before its delete, pipelined: the read's copy races
    // the delete, and must never land after it.
    let deleted = &moved[..100];
    let pairs: String = deleted
        .iter()
        .map(|&i| format!("get {k}\r\ndelete {k}\r\n", k = keys[i]))
        .collect();
    client.wr.write_all(pairs.as_bytes()).await.unwrap();
    for _ in deleted {
        assert!(matches!(client.reply().await, Reply::Values(v) if v.len() == 1));
        assert_eq!(client.reply().await, Reply::Other("DELETED".into()));
    }
    let mut expected: Vec<Option<String>> = vec![Some("v1".into()); keys.len()];
    for &i in deleted {
        expected[i] = None;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        read_all(&mut client, &keys).await,
        expected,
        "in the window"
    );
    // Past the window (and the closing settle, 0 s): the new ring alone.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        read_all(&mut client, &keys).await,
        expected,
        "after the warm-up"
    );
    // The copy kept the flags and the remaining TTL.
    let (reply, _) = client
        .call(&format!("mg {} f t v\r\n", keys[moved[150]]))
        .await;
    let Reply::Other(line) = reply else {
        panic!("{reply:?}")
    };
    let ttl: i64 = line
        .split(' ')
        .find_map(|t| t.strip_prefix('t')?.parse().ok())
        .unwrap();
    assert!(line.contains(" f7"), "{line}");
    assert!((590..=600).contains(&ttl), "{line}");
    let metrics = http_get(proxy.addr("metrics"), "/metrics").await.1;
    let copied = sample(&metrics, "memgate_proxy_warmup_copies_total", &["copied"]).unwrap();
    assert!(
        copied >= (moved.len() - deleted.len()) as f64,
        "{copied} copied"
    );
}

/// Wait until the proxy has logged `n` reloads.
async fn reloaded(proxy: &Process, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.log().matches("configuration reloaded").count() < n {
        assert!(Instant::now() < deadline, "no reload: {}", proxy.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every key of `keys` read through `client` with multi-key gets: its value,
/// or None.
async fn read_all(client: &mut Text, keys: &[String]) -> Vec<Option<String>> {
    let mut values = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(100) {
        let request = format!("get {}\r\n", chunk.join(" "));
        let Reply::Values(found) = client.call(&request).await.0 else {
            panic!("get failed");
        };
        let found: HashMap<String, String> = found.into_iter().collect();
        values.extend(chunk.iter().map(|k| found.get(k).cloned()));
    }
    values
}

/// The warm-up's goal, key by key: after a reload that adds a node, keys
/// that moved are still hits; deletes and overwrites made after it, in its
/// settle phase and in its window, read back as made; and a second reload
/// that removes the node again (which still runs) brings back no value from
/// before them. Without the warm-up, every moved key misses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_keys_stay_warm_and_no_old_value_comes_back_through_add_and_remove() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let nodes = local_nodes(&pki, dir.path(), 4);
    let entries = named(nodes.iter().map(|n| n.addr("tls")));
    let (before, after) = (ring(&entries[..3]), ring(&entries));
    let keys: Vec<String> = (0..3000).map(|i| format!("wk{i}")).collect();
    let moved: Vec<usize> = (0..keys.len())
        .filter(|&i| before.locate(keys[i].as_bytes()) != after.locate(keys[i].as_bytes()))
        .collect();
    assert!(moved.len() > 400, "{} keys move", moved.len());

    for warmup in ["0", "30s"] {
        let dir = dir.path().join(format!("warmup{warmup}"));
        std::fs::create_dir(&dir).unwrap();
        let (config, servers) = servers_file(&dir, &entries);
        servers(3);
        let args = [
            "--config",
            config.to_str().unwrap(),
            "--warmup",
            warmup,
            "--warmup-settle",
            "1s",
        ];
        let proxy = spawn_proxy(&pki, &dir, PROXY_USER, PROXY_PASS, &args);
        let mut client = Text::connect(proxy.addr("client")).await;
        client.call("flush_all\r\n").await;
        for key in &keys {
            let (reply, _) = client.call(&format!("set {key} 0 0 2\r\nv1\r\n")).await;
            assert_eq!(reply, Reply::Stored);
        }
        let mut expected: Vec<Option<String>> = vec![Some("v1".into()); keys.len()];
        servers(4);
        kill(proxy.pid(), "HUP");
        reloaded(&proxy, 1).await;
        let seen = read_all(&mut client, &keys).await;
        let missed = moved.iter().filter(|&&i| seen[i].is_none()).count();
        if warmup == "0" {
            assert_eq!(missed, moved.len(), "without a warm-up moved keys miss");
            continue;
        }
        assert_eq!(seen, expected, "right after adding a node");

        // Deletes and overwrites of moved keys in the settle phase, then in
        // the window; each read back at once and after the phase changed.
        let mut next = moved.iter().copied();
        for round in 0..2 {
            for _ in 0..40 {
                let i = next.next().unwrap();
                let (reply, _) = client.call(&format!("delete {}\r\n", keys[i])).await;
                assert_eq!(reply, Reply::Other("DELETED".into()), "{}", keys[i]);
                expected[i] = None;
                let j = next.next().unwrap();
                let value = format!("w{round}");
                let request = format!("set {} 0 0 2\r\n{value}\r\n", keys[j]);
                assert_eq!(client.call(&request).await.0, Reply::Stored);
                expected[j] = Some(value);
            }
            assert_eq!(
                read_all(&mut client, &keys).await,
                expected,
                "round {round}"
            );
            tokio::time::sleep(Duration::from_millis(1200)).await;
            assert_eq!(
                read_all(&mut client, &keys).await,
                expected,
                "round {round}, later"
            );
        }

        // The fourth node leaves (it still runs, holding what was written
        // to it): its keys go back to nodes that still hold "v1" for some.
        servers(3);
        kill(proxy.pid(), "HUP");
        reloaded(&proxy, 2).await;
        assert_eq!(read_all(&mut client, &keys).await, expected, "node removed");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            read_all(&mut client, &keys).await,
            expected,
            "node removed, later"
        );
        let metrics = http_get(proxy.addr("metrics"), "/metrics").await.1;
        let hits: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("memgate_proxy_warmup_fallbacks_total{result=\"hit\"}"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(hits >= moved.len() as f64, "fallback hits {hits}");
    }
}

/// One of three nodes behind a relay that delays every chunk, a little and
/// then a lot (past the request timeout, so that its requests time out and
/// its connections are replaced): no reply is wrong, and no acknowledged
/// write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_sees_no_wrong_reply_through_a_slow_link() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let nodes = local_nodes(&pki, dir.path(), 3);
    let slow = relay(nodes[1].addr("tls"), None).await;
    let addrs = [nodes[0].addr("tls"), slow.addr, nodes[2].addr("tls")];
    let servers = named(addrs).join(",");
    let args = ["--servers", &servers];
    let proxy = spawn_proxy(&pki, dir.path(), PROXY_USER, PROXY_PASS, &args);
    let check = start_check(proxy.addr("client"), 6, 1, &["--protocol", "meta"]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    slow.delay_us.store(2_000, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    slow.delay_us.store(300_000, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    slow.delay_us.store(0, Ordering::SeqCst);
    let check = check.await.unwrap();
    eprintln!("slow link: {}", check["summary"]);
    assert_no_wrong_reply(&check, false);
}

/// Three memgate nodes behind a sidecar with `--replicas 2` and a short
/// quarantine, and `keys` written through it as "v1".
async fn replicated(
    dir: &Path,
    pki: &TestPki,
    keys: &[String],
    extra: &[&str],
) -> (Vec<Process>, Process) {
    let nodes = local_nodes(pki, dir, 3);
    let servers = named(nodes.iter().map(|n| n.addr("tls"))).join(",");
    let mut args = vec![
        "--servers",
        &servers,
        "--replicas",
        "2",
        "--warmup-settle",
        "1s",
    ];
    args.extend(extra);
    let proxy = spawn_proxy(pki, dir, PROXY_USER, PROXY_PASS, &args);
    let mut client = Text::connect(proxy.addr("client")).await;
    for key in keys {
        let (reply, _) = client.call(&format!("set {key} 0 0 2\r\nv1\r\n")).await;
        assert_eq!(reply, Reply::Stored, "{key}");
    }
    (nodes, proxy)
}

/// Wait until the proxy's up gauge for `node` reads `up`.
async fn node_is(proxy: &Process, node: &str, up: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = http_get(proxy.addr("metrics"), "/metrics").await.1;
        if total(&metrics, "memgate_proxy_node_up", node) == up {
            return;
        }
        assert!(Instant::now() < deadline, "{node} never {up}: {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every read of `keys` is `expected` or a miss: the number of misses of
/// keys that have a value. A value other than the expected one fails.
fn misses_of_live_keys(
    what: &str,
    seen: &[Option<String>],
    expected: &[Option<String>],
    keys: &[String],
) -> usize {
    let mut misses = 0;
    for (i, key) in keys.iter().enumerate() {
        match (&seen[i], &expected[i]) {
            (Some(value), Some(want)) => assert_eq!(value, want, "{what}: {key} is old"),
            (Some(value), None) => panic!("{what}: deleted {key} came back as {value}"),
            (None, Some(_)) => misses += 1,
            (None, None) => {}
        }
    }
    misses
}

/// `--replicas 2`, one of three nodes killed with SIGKILL: its keys are
/// read from their second replica (at most 1% miss, none errs); restarted
/// empty, it is read again once reconciled, and its keys still hit, copied
/// back to it from the other replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_a_killed_node_costs_no_misses_before_or_after_it_returns_empty() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let keys: Vec<String> = (0..3000).map(|i| format!("rk{i}")).collect();
    let (mut nodes, proxy) = replicated(dir.path(), &pki, &keys, &[]).await;
    let expected: Vec<Option<String>> = vec![Some("v1".into()); keys.len()];
    let addr = nodes[0].addr("tls");
    nodes[0].kill();
    let mut client = Text::connect(proxy.addr("client")).await;
    let mut errors = 0;
    for key in keys.iter().take(300) {
        if let (Reply::ServerError(_), _) = client.call(&format!("get {key}\r\n")).await {
            errors += 1;
        }
    }
    assert_eq!(errors, 0, "single gets of a killed node's keys erred");
    let seen = read_all(&mut client, &keys).await;
    let misses = misses_of_live_keys("killed", &seen, &expected, &keys);
    eprintln!("killed: {misses} of {} missed", keys.len());
    assert!(misses <= keys.len() / 100, "{misses} missed");
    // Writes while it is gone go to the other replica, and are hinted.
    let mut expected = expected;
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        let (reply, _) = client.call(&format!("set {key} 0 0 2\r\nv2\r\n")).await;
        assert_eq!(reply, Reply::Stored, "{key}");
        expected[i] = Some("v2".into());
    }
    nodes[0] = spawn_node(&pki, dir.path(), &[], &addr.to_string());
    node_is(&proxy, "n0", 1.0).await;
    // Reconciled on the next probe, then quarantined for the settle (1 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let seen = read_all(&mut client, &keys).await;
    let misses = misses_of_live_keys("returned empty", &seen, &expected, &keys);
    eprintln!("returned empty: {misses} of {} missed", keys.len());
    assert!(misses <= keys.len() / 100, "{misses} missed");
    let metrics = http_get(proxy.addr("metrics"), "/metrics").await.1;
    let repairs = sample(&metrics, "memgate_proxy_replica_repairs_total", &["copied"]).unwrap();
    assert!(repairs > 500.0, "{repairs} repairs: {metrics}");
    assert!(
        total(&metrics, "memgate_proxy_hints_total", "n0") > 0.0,
        "{metrics}"
    );
}

/// `--replicas 2`, one of three nodes stopped with SIGSTOP while keys are
/// overwritten and deleted, then continued: it holds the old values, and
/// none of them is ever served, during its reconciliation or after it.
/// With `--hints 50` the same holds through an overflow (its part of the
/// cache is flushed instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_a_node_back_from_sigstop_serves_no_old_or_deleted_value() {
    let _serial = SERIAL.lock().await;
    for hints in ["10000", "50"] {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new();
        let keys: Vec<String> = (0..2000).map(|i| format!("sk{i}")).collect();
        let (nodes, proxy) = replicated(dir.path(), &pki, &keys, &["--hints", hints]).await;
        let mut client = Text::connect(proxy.addr("client")).await;
        kill(nodes[1].pid(), "STOP");
        // Reads find it silent and mark it down; each is answered by the
        // other replica meanwhile.
        let probe = keys.clone();
        let mut reader = Text::connect(proxy.addr("client")).await;
        let reads = tokio::spawn(async move {
            for key in probe.iter().cycle().take(200) {
                let (reply, _) = reader.call(&format!("get {key}\r\n")).await;
                assert!(
                    matches!(reply, Reply::Values(ref v) if v.len() == 1),
                    "{key}: {reply:?}"
                );
            }
        });
        node_is(&proxy, "n1", 0.0).await;
        reads.await.unwrap();
        let mut expected: Vec<Option<String>> = vec![Some("v1".into()); keys.len()];
        for (i, key) in keys.iter().enumerate() {
            if i % 4 == 1 {
                let (reply, _) = client.call(&format!("delete {key}\r\n")).await;
                assert_eq!(reply, Reply::Other("DELETED".into()), "{key}");
                expected[i] = None;
            } else if i % 2 == 0 {
                let (reply, _) = client.call(&format!("set {key} 0 0 2\r\nv2\r\n")).await;
                assert_eq!(reply, Reply::Stored, "{key}");
                expected[i] = Some("v2".into());
            }
        }
        kill(nodes[1].pid(), "CONT");
        // Read everything from the moment it returns until well after its
        // quarantine: never an old or a deleted value.
        let returned = Instant::now();
        let mut worst = 0;
        while returned.elapsed() < Duration::from_secs(5) {
            let seen = read_all(&mut client, &keys).await;
            worst = worst.max(misses_of_live_keys(
                &format!("hints {hints}"),
                &seen,
                &expected,
                &keys,
            ));
        }
        eprintln!("hints {hints}: at most {worst} misses per round");
        assert!(worst <= keys.len() / 100, "{worst} missed");
        node_is(&proxy, "n1", 1.0).await;
        let metrics = http_get(proxy.addr("metrics"), "/metrics").await.1;
        let event = |e: &str| {
            metrics
                .lines()
                .filter(|l| {
                    l.starts_with("memgate_proxy_hints_total") && l.contains("n1") && l.contains(e)
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        match hints {
            "50" => assert!(event("overflowed") >= 1.0, "{metrics}"),
            _ => assert!(event("replayed") >= 500.0, "{metrics}"),
        }
    }
}

/// `memgate bench --check` through a sidecar with `--replicas 2` while one
/// of three nodes is stopped and continued, and, in a run of its own, while
/// one is killed and restarted empty: no reply is wrong, and no
/// acknowledged write is lost, in each dialect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_sees_no_wrong_reply_and_no_lost_write_with_two_replicas() {
    let _serial = SERIAL.lock().await;
    for protocol in ["meta", "text", "binary"] {
        for fault in ["stop", "kill"] {
            let dir = tempfile::tempdir().unwrap();
            let pki = TestPki::new();
            let (mut nodes, proxy) = replicated(dir.path(), &pki, &[], &[]).await;
            let check = start_check(proxy.addr("client"), 7, 4, &["--protocol", protocol]);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            match fault {
                "stop" => {
                    kill(nodes[1].pid(), "STOP");
                    tokio::time::sleep(Duration::from_millis(2000)).await;
                    kill(nodes[1].pid(), "CONT");
                }
                _ => {
                    let addr = nodes[2].addr("tls");
                    nodes[2].kill();
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    nodes[2] = spawn_node(&pki, dir.path(), &[], &addr.to_string());
                }
            }
            let check = check.await.unwrap();
            eprintln!("{protocol} {fault}: {}", check["summary"]);
            assert_no_wrong_reply(&check, false);
            assert_eq!(check["violations"], 0, "{check}");
            assert_eq!(check["errors"], 0, "{check}");
        }
    }
}

/// `--replicas 2`: an item has the same CAS on both of its replicas, so
/// the token a client got from `gets` still works after the node that
/// gave it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_a_cas_token_outlives_the_node_that_gave_it() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let keys = vec!["cas-key".to_string()];
    let (mut nodes, proxy) = replicated(dir.path(), &pki, &keys, &[]).await;
    let entries = named(nodes.iter().map(|n| n.addr("tls")));
    let first = ring(&entries).locate(b"cas-key");
    let mut client = Text::connect(proxy.addr("client")).await;
    let cas = |reply: Reply| match reply {
        Reply::Other(line) => line
            .strip_prefix("HD c")
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{line}")),
        other => panic!("{other:?}"),
    };
    let before = cas(client.call("mg cas-key c\r\n").await.0);
    nodes[first].kill();
    let after = cas(client.call("mg cas-key c\r\n").await.0);
    assert_eq!(before, after, "the other replica's CAS");
    let (reply, _) = client
        .call(&format!("cas cas-key 0 0 2 {after}\r\nv2\r\n"))
        .await;
    assert_eq!(reply, Reply::Stored);
    let (reply, _) = client.call("get cas-key\r\n").await;
    assert_eq!(reply, Reply::Values(vec![("cas-key".into(), "v2".into())]));
}

/// `--replicas 2`: a client that leaves while its writes wait for their
/// first replica does not leave the key's replicas holding different
/// values. The first node is stopped while the client pipelines writes of
/// its keys, behind two large reads that reach the client unread; the
/// client then closes (a reset, for its unread replies), which ends its
/// session at once. Once the node continues, each write it takes is still
/// given to the key's second replica: with the first killed, every key
/// reads back as before, not as the value it had before the writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_a_client_that_leaves_mid_write_leaves_the_replicas_equal() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let keys: Vec<String> = (0..900).map(|i| format!("vk{i}")).collect();
    let (mut nodes, proxy) = replicated(dir.path(), &pki, &keys, &[]).await;
    let ring = ring(&named(nodes.iter().map(|n| n.addr("tls"))));
    let first: Vec<String> = keys
        .iter()
        .filter(|k| ring.locate(k.as_bytes()) == 0)
        .cloned()
        .collect();
    let big = (0..)
        .map(|i| format!("big{i}"))
        .find(|k| ring.locate(k.as_bytes()) != 0)
        .unwrap();
    let mut client = Text::connect(proxy.addr("client")).await;
    let value = "b".repeat(200_000);
    let (reply, _) = client
        .call(&format!("set {big} 0 0 {}\r\n{value}\r\n", value.len()))
        .await;
    assert_eq!(reply, Reply::Stored);
    kill(nodes[0].pid(), "STOP");
    let mut requests = format!("get {big}\r\nget {big}\r\n");
    for key in &first {
        requests.push_str(&format!("set {key} 0 0 2\r\nv2\r\n"));
    }
    let mut leaving = TcpStream::connect(proxy.addr("client")).await.unwrap();
    leaving.write_all(requests.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(leaving);
    tokio::time::sleep(Duration::from_millis(100)).await;
    kill(nodes[0].pid(), "CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = read_all(&mut client, &first).await;
    let written = before.iter().filter(|v| v.as_deref() == Some("v2")).count();
    eprintln!("{written} of {} writes taken", first.len());
    assert!(written > 0, "no write arrived");
    nodes[0].kill();
    let after = read_all(&mut client, &first).await;
    for (i, key) in first.iter().enumerate() {
        assert_eq!(after[i], before[i], "{key}: its second replica differs");
    }
}
