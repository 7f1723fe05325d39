//! `memgate proxy` and `memgate route` as operators run them: environment,
//! config file, exit codes, SIGHUP and SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::process::{cpu_ticks, run, spawn, Process};
use common::*;

#[test]
fn bad_proxy_configuration_exits_64_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, TestPki::new().ca_pem()).unwrap();
    let ca = ca.to_str().unwrap();
    let base = [("MEMCACHIER_USERNAME", "u"), ("MEMCACHIER_PASSWORD", "p")];
    // A valid server list and CA, and then `flags`.
    let with =
        |flags: &[&'static str]| [&["proxy", "--servers", "a:1", "--ca", ca][..], flags].concat();
    for (args, why) in [
        (vec!["proxy", "--ca", ca], "servers"),
        (vec!["proxy", "--servers", "a:1"], "--ca"),
        (
            vec![
                "proxy",
                "--servers",
                "a:1",
                "--ca",
                ca,
                "--listen",
                "0.0.0.0:0",
            ],
            "loopback",
        ),
        (
            vec!["proxy", "--servers", "a:1", "--ca", ca, "--timeout", "soon"],
            "--timeout",
        ),
        (vec!["proxy", "--servers", "a:notaport", "--ca", ca], "port"),
        (
            vec!["proxy", "--servers", "a:1", "--ca", ca, "--threads", "0"],
            "--threads",
        ),
        (with(&["--busy-poll", "2ms"]), "--busy-poll"),
        (
            with(&["--busy-poll", "100us", "--threads", "2"]),
            "--threads 1",
        ),
        (
            vec!["proxy", "--servers", "a:1", "--ca", "/nonexistent/ca.pem"],
            "nonexistent",
        ),
        (
            vec![
                "proxy",
                "--servers",
                "a:1",
                "--ca",
                ca,
                "--config",
                "/nonexistent.toml",
            ],
            "nonexistent",
        ),
    ] {
        let exit = run(&args, &base);
        let stderr = exit.stderr;
        assert_eq!(exit.code, 64, "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(why),
            "{args:?} should mention {why}: {stderr}"
        );
        assert!(!stderr.contains("\"p\""), "password leaked: {stderr}");
    }
}

#[test]
fn route_prints_each_keys_node() {
    let servers = "mc1.example.com:11211,mc2.example.com:11219,other=10.0.0.3:11211:2";
    let exit = run(
        &["route", "--servers", servers, "alpha", "beta", "gamma"],
        &[],
    );
    let (stdout, stderr) = (exit.stdout, exit.stderr);
    assert_eq!(exit.code, 0, "{stderr}");
    let specs: Vec<_> = servers
        .split(',')
        .map(|s| memgate::proxy::ring::parse_server_entry(s).unwrap())
        .collect();
    let ring = memgate::proxy::ring::Ring::new(&specs).unwrap();
    let expected: String = ["alpha", "beta", "gamma"]
        .iter()
        .map(|k| format!("{k}\t{}\n", specs[ring.locate(k.as_bytes())].name))
        .collect();
    assert_eq!(stdout, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_from_env_and_config_reloads_on_sighup_and_drains_on_sigterm() {
    let pki = TestPki::new();
    let first = start_tls_nodes(&pki, 1).await;
    let second = start_tls_nodes(&pki, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let config = dir.path().join("proxy.toml");
    let file = |port: u16| {
        // Two threads from the file: the work-stealing runtime serves,
        // reloads and drains as the default single thread does.
        // No settle phase: the new node is primary at once.
        format!("timeout = \"2s\"\nmetrics_listen = \"none\"\nthreads = 2\nwarmup_settle = \"0s\"\nservers = \"127.0.0.1:{port}\"\n")
    };
    std::fs::write(&config, file(first[0].tls.unwrap().port())).unwrap();
    let mut proxy = spawn_proxy(&config, &ca).await;
    let addr = proxy.addr("client");

    expect_workers(&mut proxy, 2, "with threads = 2 in the config file");

    let mut c = connect(addr).await;
    c.expect(b"set k 0 0 5\r\nfirst\r\n", b"STORED\r\n").await;
    assert_eq!(
        first[0]
            .shared
            .tenants()
            .get("42")
            .unwrap()
            .store
            .usage()
            .items,
        1
    );

    // Point the config file at the second node and SIGHUP: same client connection.
    std::fs::write(&config, file(second[0].tls.unwrap().port())).unwrap();
    kill(proxy.pid(), "HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The same client connection now reaches the second node, which is
    // empty: the warm-up reads the key from the first, and a write goes to
    // the second and clears the first.
    c.expect(b"get k\r\n", b"VALUE k 0 5\r\nfirst\r\nEND\r\n")
        .await;
    c.expect(b"set k 0 0 6\r\nsecond\r\n", b"STORED\r\n").await;
    let items = |node: &TestNode| node.shared.tenants().get("42").unwrap().store.usage().items;
    assert_eq!(items(&first[0]), 0, "cleared on the node the key left");
    assert_eq!(
        second[0]
            .shared
            .tenants()
            .get("42")
            .unwrap()
            .store
            .usage()
            .items,
        1
    );

    kill(proxy.pid(), "TERM");
    let (status, log) = tokio::task::spawn_blocking(move || (proxy.wait(), proxy.log()))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(!log.contains(PROXY_PASS), "password logged");
}

/// `memgate proxy --config CONFIG` with the CA from the environment and the
/// test credentials, once it says it listens for clients; it never logs the
/// password.
async fn spawn_proxy(config: &std::path::Path, ca: &std::path::Path) -> Process {
    let (config, ca) = (config.display().to_string(), ca.display().to_string());
    let proxy = tokio::task::spawn_blocking(move || {
        spawn(
            &[],
            &["proxy", "--listen", "127.0.0.1:0", "--config", &config],
            &[
                ("MEMGATE_PROXY_CA", &ca),
                ("MEMCACHIER_USERNAME", PROXY_USER),
                ("MEMCACHIER_PASSWORD", PROXY_PASS),
            ],
            &["client"],
        )
    })
    .await
    .unwrap();
    assert!(!proxy.log().contains(PROXY_PASS), "password logged");
    proxy
}

/// Assert that `child` runs `want` tokio work-stealing workers (`when`
/// says under what configuration). On failure it is killed first: left
/// running, its stderr would keep the log reader waiting.
///
/// A new thread carries its parent's name until it has run far enough to
/// rename itself, and on a loaded machine a worker may not have run yet
/// when the sidecar logs that it listens. So the count is read again for
/// up to five seconds before it is held against `want`.
fn expect_workers(proxy: &mut Process, want: usize, when: &str) {
    let pid = proxy.pid();
    let count = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == "tokio-rt-worker")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut workers = count();
    while workers != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        workers = count();
    }
    if workers != want {
        proxy.kill();
        panic!("{workers} worker threads {when}");
    }
}

/// One TLS node and `memgate proxy` in front of it, configured by a file
/// with `extra` lines. The node and the directory live as long as the
/// returned values.
async fn proxy_before_one_node(
    extra: &str,
) -> (
    Vec<TestNode>,
    tempfile::TempDir,
    Process,
    std::net::SocketAddr,
) {
    let pki = TestPki::new();
    let nodes = start_tls_nodes(&pki, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let config = dir.path().join("proxy.toml");
    let port = nodes[0].tls.unwrap().port();
    let text = format!("metrics_listen = \"none\"\n{extra}servers = \"127.0.0.1:{port}\"\n");
    std::fs::write(&config, text).unwrap();
    let proxy = spawn_proxy(&config, &ca).await;
    let addr = proxy.addr("client");
    (nodes, dir, proxy, addr)
}

/// SIGTERM, and the proxy exits 0.
async fn terminate(mut proxy: Process) {
    kill(proxy.pid(), "TERM");
    let status = tokio::task::spawn_blocking(move || proxy.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Without `--threads`, the sidecar is one event loop: no work-stealing
/// workers, and it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_serves_on_one_thread_by_default() {
    let (_nodes, _dir, mut proxy, addr) = proxy_before_one_node("").await;
    expect_workers(&mut proxy, 0, "without --threads");
    let mut c = connect(addr).await;
    c.expect(b"set k 0 0 5\r\nfirst\r\n", b"STORED\r\n").await;
    c.expect(b"get k\r\n", b"VALUE k 0 5\r\nfirst\r\nEND\r\n")
        .await;
    terminate(proxy).await;
}

/// `busy_poll` from the config file: the sidecar serves, and once the
/// window after its last reply has closed it uses no CPU while idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_with_busy_poll_serves_and_sleeps_when_idle() {
    let (_nodes, _dir, mut proxy, addr) = proxy_before_one_node("busy_poll = \"500us\"\n").await;
    let mut c = connect(addr).await;
    for _ in 0..20 {
        c.expect(b"set k 0 0 5\r\nfirst\r\n", b"STORED\r\n").await;
        c.expect(b"get k\r\n", b"VALUE k 0 5\r\nfirst\r\nEND\r\n")
            .await;
    }
    // CPU time in clock ticks (utime + stime), as benches/compare.sh reads it.
    let pid = proxy.pid();
    let ticks = move || cpu_ticks(pid);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let idle_from = ticks();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let spent = ticks() - idle_from;
    // Polling through the idle second would be about 100 ticks.
    if spent > 5 {
        proxy.kill();
        panic!("{spent} ticks of CPU in an idle second");
    }
    terminate(proxy).await;
}

/// A busy listen port is reported in one line that names the cause once
/// (the message used to repeat "Address already in use" three times).
#[test]
fn busy_listen_port_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, TestPki::new().ca_pem()).unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let exit = run(
        &[
            "proxy",
            "--servers",
            "a:1",
            "--ca",
            ca.to_str().unwrap(),
            "--listen",
            &addr,
        ],
        &[("MEMCACHIER_USERNAME", "u"), ("MEMCACHIER_PASSWORD", "p")],
    );
    let stderr = exit.stderr;
    assert_eq!(exit.code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert_eq!(stderr.matches("in use").count(), 1, "{stderr}");
    drop(busy);
}
