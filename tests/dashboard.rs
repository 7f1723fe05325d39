//! The analytics dashboard (`/caches/<cache_id>`) against two in-process
//! nodes: first over plain HTTP, as a browser without JavaScript sees it
//! (the 401 challenge, the API's 403s, numbers that match the API, graphs
//! picked by query, forms guarded by CSRF tokens, the flush confirmation
//! page, enabling a disabled cache); then in headless Chromium, driven by
//! `tests/browser/dashboard.mjs` (playwright-core), which also saves
//! screenshots under `target/`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::{basic_auth, connect, http_call, http_request, two_caches, Client, TestNode, FORM};
use memgate::node::admin::AdminConfig;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::watch;

const TOKEN: &str = "dashboard-test-token-0123456789";
const ALICE: (&str, &str) = ("alice", "alice-secret");
const READER: (&str, &str) = ("reader", "reader-secret");
const BOB: (&str, &str) = ("bob", "bob secret");
const CAROL: (&str, &str) = ("carol", "carol-secret");

struct Cluster {
    nodes: Vec<TestNode>,
    /// One logged-in client per node, kept open (a live connection).
    clients: Vec<Client<TcpStream>>,
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

/// Two nodes with two_caches() and their admin endpoints, and analytics.
async fn cluster() -> Cluster {
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(
            common::start_node(Some(&two_caches()), false, |c| {
                c.admin = Some(AdminConfig {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    token: Some(TOKEN.into()),
                    tls: None,
                });
            })
            .await,
        );
    }
    let list = nodes
        .iter()
        .map(|n| format!("{}={}", n.plain.unwrap(), n.admin.unwrap()))
        .collect::<Vec<_>>()
        .join(",");
    let (addr, stop) = common::start_analytics(common::analytics_config(&list, Some(TOKEN))).await;
    let mut clients = Vec::new();
    for node in &nodes {
        let mut c = connect(node.plain.unwrap()).await;
        c.expect(b"set alice 0 0 12\r\nalice-secret\r\n", b"STORED\r\n")
            .await;
        clients.push(c);
    }
    Cluster {
        nodes,
        clients,
        addr,
        _stop: stop,
    }
}

impl Cluster {
    /// Some sets, hits and misses on every node (more on the first).
    async fn traffic(&mut self, round: usize) {
        for (n, c) in self.clients.iter_mut().enumerate() {
            for i in 0..(4 + round * 2) / (n + 1) {
                let key = format!("k{round}-{i}");
                let value = "v".repeat(200 * (i + 1));
                let set = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
                c.expect(set.as_bytes(), b"STORED\r\n").await;
                let reply = format!("VALUE {key} 0 {}\r\n{value}\r\nEND\r\n", value.len());
                c.expect(format!("get {key}\r\n").as_bytes(), reply.as_bytes())
                    .await;
            }
            c.expect(b"get nothing-here\r\n", b"END\r\n").await;
        }
    }

    async fn get(&self, path: &str, cred: Option<(&str, &str)>) -> (u16, String) {
        let auth = cred.map(|(u, p)| basic_auth(u, p));
        http_request(self.addr, "GET", path, auth.as_deref(), None).await
    }

    /// A form POST with the given body; (status, head, body).
    async fn post(&self, path: &str, cred: (&str, &str), form: &str) -> (u16, String, String) {
        let auth = basic_auth(cred.0, cred.1);
        let headers = [("Authorization", auth.as_str()), ("Content-Type", FORM)];
        send(self.addr, "POST", path, &headers, Some(form)).await
    }

    async fn api(&self, path: &str, cred: (&str, &str)) -> Value {
        let (status, body) = self.get(path, Some(cred)).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// A request through the project's client; (status, head, body), the head
/// as `name: value` lines.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    let reply = http_call(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let head = reply
        .headers
        .iter()
        .map(|(name, value)| format!("{name}: {}\r\n", String::from_utf8_lossy(value.as_bytes())))
        .collect();
    (reply.status, head, reply.text())
}

/// The first `data-value` of `data-stat="name"` after `from` in `page`.
fn shown(page: &str, from: &str, name: &str) -> String {
    let start = page.find(from).unwrap_or_else(|| panic!("no {from}"));
    let needle = format!("data-stat=\"{name}\" data-value=\"");
    let at = page[start..]
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name}"))
        + start
        + needle.len();
    page[at..].split('"').next().unwrap().to_string()
}

fn csrf(page: &str) -> String {
    let needle = "name=\"csrf\" value=\"";
    let at = page.find(needle).expect("a form with a token") + needle.len();
    page[at..].split('"').next().unwrap().to_string()
}

fn sum(stats: &Value, name: &str) -> u64 {
    stats
        .as_object()
        .unwrap()
        .values()
        .map(|s| s[name].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_without_javascript() {
    let mut c = cluster().await;
    c.traffic(1).await;

    // No credentials: a challenge, so a browser asks for them.
    let (status, head, _) = send(c.addr, "GET", "/caches/1561", &[], None).await;
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: Basic realm="), "{head}");
    // Wrong password, another cache's credential: the API's 403.
    for cred in [("alice", "nope"), BOB] {
        let (status, body) = c.get("/caches/1561", Some(cred)).await;
        assert_eq!(status, 403);
        assert!(body.contains(memgate::analytics::api::NOT_AUTHORIZED));
    }

    // The numbers are the API's, summed over both nodes, and per node.
    let (status, page) = c.get("/caches/1561", Some(ALICE)).await;
    assert_eq!(status, 200, "{page}");
    let stats = c.api("/api/v1/1561/stats", ALICE).await;
    for name in [
        "bytes",
        "limit_maxbytes",
        "curr_connections",
        "total_connections",
        "curr_items",
        "evictions",
        "cmd_set",
        "cmd_flush",
        "get_hits",
        "get_misses",
    ] {
        assert_eq!(
            shown(&page, "id=\"panels\"", name),
            sum(&stats, name).to_string(),
            "{name}"
        );
    }
    let (hits, misses) = (sum(&stats, "get_hits"), sum(&stats, "get_misses"));
    let rate = 100.0 * hits as f64 / (hits + misses) as f64;
    assert_eq!(
        shown(&page, "id=\"panels\"", "hit_rate"),
        format!("{rate:.2}")
    );
    for node in &c.nodes {
        let label = node.plain.unwrap().to_string();
        let row = format!("data-node=\"{label}\"");
        assert_eq!(
            shown(&page, &row, "curr_items"),
            stats[&label]["curr_items"].to_string()
        );
    }
    assert!(page.contains("data-stat=\"new_evictions\""));
    assert!(page.contains("name=\"viewport\""));
    assert!(!page.contains("http://") && !page.contains("https://"));

    // Graphs: usage and hit rate by default; any two by query.
    assert!(page.contains("data-series=\"usage\"") && page.contains("data-series=\"hit_rate\""));
    let (_, picked) = c
        .get("/caches/1561?a=evictions&b=connections", Some(ALICE))
        .await;
    assert!(picked.contains("data-series=\"evictions\""));
    assert!(picked.contains("data-series=\"connections\""));
    assert!(picked.contains("<option value=\"connections\" selected>"));

    // What if: a few dozen gets are too few to draw a curve from, and the
    // page says so; the API has the same curve, over both nodes' limits.
    assert!(
        page.contains("id=\"what-if\" data-trustworthy=\"false\""),
        "{page}"
    );
    assert!(page.contains("id=\"what-if-note\"") && page.contains("Not enough traffic yet"));
    assert!(!page.contains("class=\"what-if-lines\""));
    let w = c.api("/api/v1/1561/whatif", ALICE).await;
    assert_eq!(w["what_if"]["trustworthy"], false, "{w}");
    assert_eq!(w["what_if"]["limit"], 16 << 20);
    assert_eq!(w["what_if"]["accesses_total"], sum(&stats, "cmd_get"));
    assert_eq!(w["servers"].as_object().unwrap().len(), 2);
    let (status, _) = c.get("/api/v1/1561/whatif", Some(BOB)).await;
    assert_eq!(status, 403);

    // Forms need this page's token.
    let token = csrf(&page);
    let (status, _, _) = c.post("/caches/1561/credentials", ALICE, "").await;
    assert_eq!(status, 403);
    let (status, _, _) = c
        .post("/caches/1561/credentials", ALICE, "csrf=forged")
        .await;
    assert_eq!(status, 403);
    let form = format!("csrf={token}");
    // Another site's page cannot post one, even with the token.
    let auth = basic_auth(ALICE.0, ALICE.1);
    let headers = [
        ("Origin", "http://evil.example"),
        ("Authorization", auth.as_str()),
        ("Content-Type", FORM),
    ];
    let (status, _, _) = send(
        c.addr,
        "POST",
        "/caches/1561/credentials",
        &headers,
        Some(&form),
    )
    .await;
    assert_eq!(status, 403);

    // Create: the page shows the new password once; it works on both nodes.
    let (status, _, created) = c.post("/caches/1561/credentials", ALICE, &form).await;
    assert_eq!(status, 200, "{created}");
    let field = |id: &str| {
        let needle = format!("<code id=\"{id}\">");
        let at = created.find(&needle).unwrap() + needle.len();
        created[at..].split('<').next().unwrap().to_string()
    };
    let (user, pass) = (field("new-username"), field("new-password"));
    for node in &c.nodes {
        assert_eq!(
            connect(node.plain.unwrap())
                .await
                .sasl_login(&user, &pass)
                .await,
            0
        );
    }
    // Capabilities: unchecked boxes are off.
    let path = format!("/caches/1561/credentials/{user}/capabilities");
    let (status, head, _) = c.post(&path, ALICE, &format!("{form}&api=on")).await;
    assert_eq!(status, 303, "{head}");
    let list = c.api("/api/v1/1561/credentials", ALICE).await;
    let mine = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == user.as_str())
        .unwrap();
    assert_eq!(
        (
            &mine["write_capability"],
            &mine["flush_capability"],
            &mine["api_capability"]
        ),
        (&Value::Bool(false), &Value::Bool(false), &Value::Bool(true))
    );
    // Promote, then the old primary can be deleted; the new one cannot.
    let act = |who: &str, action: &str| {
        let path = format!("/caches/1561/credentials/{who}/{action}");
        let c = &c;
        let form = form.clone();
        async move { c.post(&path, ALICE, &form).await }
    };
    assert_eq!(act(&user, "promote").await.0, 303);
    let (status, _, body) = act(&user, "delete").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(memgate::analytics::api::PRIMARY_NOT_DELETABLE));
    assert_eq!(act("alice", "promote").await.0, 303);
    let (status, head, _) = act(&user, "delete").await;
    assert_eq!(status, 303);
    assert!(
        head.contains("location: /caches/1561?done=deleted"),
        "{head}"
    );
    assert_eq!(
        connect(c.nodes[0].plain.unwrap())
            .await
            .sasl_login(&user, &pass)
            .await,
        0x20
    );
    let (_, page) = c.get("/caches/1561?done=deleted", Some(ALICE)).await;
    assert!(page.contains("The credential was deleted.") && !page.contains(&user));

    // Flush: the first POST only asks; the confirmed one flushes.
    let (status, confirm) = c.get("/caches/1561/flush", Some(ALICE)).await;
    assert_eq!(status, 200);
    assert!(confirm.contains("name=\"confirm\" value=\"yes\""));
    let (status, _, asked) = c.post("/caches/1561/flush", ALICE, &form).await;
    assert_eq!(status, 200);
    assert!(asked.contains("Flush the cache?"));
    assert!(sum(&c.api("/api/v1/1561/stats", ALICE).await, "curr_items") > 0);
    let (status, _, _) = c
        .post("/caches/1561/flush", ALICE, &format!("{form}&confirm=yes"))
        .await;
    assert_eq!(status, 303);
    assert_eq!(
        sum(&c.api("/api/v1/1561/stats", ALICE).await, "curr_items"),
        0
    );
    // A credential without `flush` gets no button, and the API's 403.
    let (_, page) = c.get("/caches/1561", Some(READER)).await;
    assert!(!page.contains("id=\"flush\""));
    let reader_form = format!("csrf={}&confirm=yes", csrf(&page));
    let (status, _, _) = c.post("/caches/1561/flush", READER, &reader_form).await;
    assert_eq!(status, 403);

    // A disabled cache: its owner sees it and enables it again.
    let (_, page) = c.get("/caches/3000", Some(CAROL)).await;
    assert!(page.contains("data-disabled=\"true\"") && page.contains("id=\"enable\""));
    let (status, _, _) = c
        .post(
            "/caches/3000/enable",
            CAROL,
            &format!("csrf={}", csrf(&page)),
        )
        .await;
    assert_eq!(status, 303);
    let (_, page) = c.get("/caches/3000?done=enabled", Some(CAROL)).await;
    assert!(page.contains("data-disabled=\"false\""));
    assert_eq!(
        connect(c.nodes[1].plain.unwrap())
            .await
            .sasl_login(CAROL.0, CAROL.1)
            .await,
        0
    );

    // The assets are the binary's own.
    let (status, css) = c.get("/assets/dashboard.css", None).await;
    assert!(status == 200 && css.contains("@media"));
    let (status, js) = c.get("/assets/dashboard.js", None).await;
    assert!(status == 200 && js.contains("confirm("));
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let chromium = Path::new("/usr/bin/chromium");
    let modules = browser_dir().join("node_modules/playwright-core");
    assert!(
        chromium.exists() && modules.exists(),
        "needs /usr/bin/chromium and tests/browser/node_modules (run .ci/run)"
    );
    let mut c = cluster().await;
    // A few sampled rounds of traffic, so the graphs have a history.
    for round in 1..=6 {
        c.traffic(round).await;
        tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    }
    // Enough reads for a curve the page draws (every key is in the sample).
    let client = &mut c.clients[0];
    for i in 0..40 {
        let set = format!("set hot{i} 0 0 3\r\nabc\r\n");
        client.expect(set.as_bytes(), b"STORED\r\n").await;
    }
    for i in 0..700 {
        let key = format!("hot{}", i % 40);
        let reply = format!("VALUE {key} 0 3\r\nabc\r\nEND\r\n");
        client
            .expect(format!("get {key}\r\n").as_bytes(), reply.as_bytes())
            .await;
    }
    let w = c.api("/api/v1/1561/whatif", ALICE).await;
    assert_eq!(w["what_if"]["trustworthy"], true, "{w}");
    assert!(!w["history"].as_array().unwrap().is_empty(), "{w}");
    // A hot key whose name is markup, touched all through the browser's run
    // (hot keys cover the last 5 to 10 s; touches leave alone the stats the
    // page is checked against); asking starts the counting.
    c.api("/api/v1/1561/hotkeys", ALICE).await;
    let hot = "hot<i>&\"q'";
    let mut toucher = connect(c.nodes[0].plain.unwrap()).await;
    toucher
        .expect(b"set alice 0 0 12\r\nalice-secret\r\n", b"STORED\r\n")
        .await;
    toucher
        .expect(
            format!("set {hot} 0 0 1\r\nx\r\n").as_bytes(),
            b"STORED\r\n",
        )
        .await;
    let hot_touches = tokio::spawn(async move {
        loop {
            toucher
                .expect(format!("touch {hot} 0\r\n").as_bytes(), b"TOUCHED\r\n")
                .await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    common::eventually("the hot key listed", || async {
        c.api("/api/v1/1561/hotkeys", ALICE).await["by_ops"][0]["key"] == hot
    })
    .await;
    // Screenshots go next to the build output: target/dashboard*.png.
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut cmd = std::process::Command::new("node");
    cmd.arg(browser_dir().join("dashboard.mjs"))
        .env("BASE_URL", format!("http://{}", c.addr))
        .env("CACHE_ID", "1561")
        .env("DASH_USER", ALICE.0)
        .env("DASH_PASS", ALICE.1)
        .env("OUT_DIR", &out);
    let log = common::run_ok(cmd).await;
    hot_touches.abort();
    assert!(log.contains("dashboard ok"), "{log}");
    assert!(out.join("dashboard.png").exists());
    assert!(out.join("dashboard-phone.png").exists());
    // The browser's flush reached both nodes.
    assert_eq!(
        sum(&c.api("/api/v1/1561/stats", ALICE).await, "curr_items"),
        0
    );
}
