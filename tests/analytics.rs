//! `memgate analytics` over real HTTP, against two in-process nodes with
//! their admin endpoints: every endpoint, the 403/404/500 cases, capability
//! checks, promotion and deletion rules, propagation to both nodes (checked
//! with SASL logins), a node down during a change then catching up,
//! history rows from the sampling loop, `--disable-after` and enabling
//! again, and the admin endpoint over mutual TLS.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::spawn;
use common::{basic_auth, cache, connect, credential, eventually, http_request, write_caches};
use memgate::analytics::api::{NOT_AUTHORIZED, NO_CREDENTIAL, PRIMARY_NOT_DELETABLE};
use memgate::analytics::AnalyticsConfig;
use memgate::node::admin::AdminConfig;
use memgate::node::caches::CachesFile;
use memgate::node::{Node, NodeShared};
use serde_json::Value;
use tokio::sync::watch;

const TOKEN: &str = "test-admin-token-0123456789";

/// The caches file of these tests: cache 1561 (alice, primary; viewer, who
/// may neither write nor flush; noapi, without the API) and cache 2000 (bob).
fn caches() -> String {
    let alice = credential("alice", "alice-secret", &["primary = true"]);
    let viewer = credential(
        "viewer",
        "viewer-secret",
        &["write = false", "flush = false"],
    );
    let noapi = credential("noapi", "noapi-secret", &["api = false"]);
    let bob = credential("bob", "bob-secret", &["primary = true"]);
    cache("1561", "8MiB", &[], &[alice, viewer, noapi]) + &cache("2000", "8MiB", &[], &[bob])
}

/// A node with an admin endpoint that can be stopped and started again on
/// the same ports, with the same caches file.
struct AdminNode {
    plain: SocketAddr,
    admin: SocketAddr,
    caches: PathBuf,
    shared: Arc<NodeShared>,
    stop: Option<watch::Sender<bool>>,
}

impl AdminNode {
    async fn start(caches: PathBuf, plain: SocketAddr, admin: SocketAddr) -> AdminNode {
        let deadline = Instant::now() + Duration::from_secs(10);
        let node = loop {
            let mut config = common::base_config();
            config.listen = Some(plain);
            config.caches_path = Some(caches.clone());
            config.admin = Some(AdminConfig {
                listen: admin,
                token: Some(TOKEN.into()),
                tls: None,
            });
            match Node::bind(config).await {
                Ok(node) => break node,
                // The previous run's listeners may not be closed yet.
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("node does not bind: {e}"),
            }
        };
        let (stop, rx) = watch::channel(false);
        let started = AdminNode {
            plain: node.plain_addr().unwrap(),
            admin: node.admin_addr().unwrap(),
            caches,
            shared: node.shared(),
            stop: Some(stop),
        };
        tokio::spawn(node.run(rx));
        started
    }

    async fn first(dir: &Path, name: &str) -> AdminNode {
        let caches = write_caches(dir, &format!("{name}.toml"), &caches());
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        AdminNode::start(caches, any, any).await
    }

    /// Stop, and wait until the admin port refuses connections.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(self.admin).await.is_ok() {
            assert!(Instant::now() < deadline, "admin port still open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn restart(&mut self) {
        *self = AdminNode::start(self.caches.clone(), self.plain, self.admin).await;
    }

    fn label(&self) -> String {
        self.plain.to_string()
    }

    /// SASL PLAIN login status on this node's memcached port.
    async fn sasl(&self, user: &str, pass: &str) -> u16 {
        connect(self.plain).await.sasl_login(user, pass).await
    }
}

impl Drop for AdminNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

struct Service {
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

async fn start_analytics(nodes: &[&AdminNode], dir: &Path, token: &str) -> Service {
    start_analytics_every(nodes, dir, token, Duration::from_millis(300)).await
}

async fn start_analytics_every(
    nodes: &[&AdminNode],
    dir: &Path,
    token: &str,
    sample_interval: Duration,
) -> Service {
    start_analytics_with(nodes, |c| {
        c.admin_token = Some(token.into());
        c.db = Some(dir.join("analytics.sqlite"));
        c.sample_interval = sample_interval;
    })
    .await
}

async fn start_analytics_with(
    nodes: &[&AdminNode],
    tweak: impl FnOnce(&mut AnalyticsConfig),
) -> Service {
    let list = nodes
        .iter()
        .map(|n| format!("{}={}", n.label(), n.admin))
        .collect::<Vec<_>>()
        .join(",");
    let mut config = common::analytics_config(&list, Some(TOKEN));
    tweak(&mut config);
    let (addr, stop) = common::start_analytics(config).await;
    Service { addr, _stop: stop }
}

impl Service {
    async fn call(
        &self,
        method: &str,
        path: &str,
        cred: Option<(&str, &str)>,
        body: Option<&str>,
    ) -> (u16, String) {
        let auth = cred.map(|(u, p)| basic_auth(u, p));
        http_request(self.addr, method, path, auth.as_deref(), body).await
    }

    async fn json(&self, method: &str, path: &str, cred: (&str, &str)) -> Value {
        let (status, body) = self.call(method, path, Some(cred), None).await;
        assert_eq!(status, 200, "{method} {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }
}

const ALICE: (&str, &str) = ("alice", "alice-secret");
const VIEWER: (&str, &str) = ("viewer", "viewer-secret");
const NOAPI: (&str, &str) = ("noapi", "noapi-secret");
const BOB: (&str, &str) = ("bob", "bob-secret");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = AdminNode::first(dir.path(), "n1").await;
    for auth in [None, Some("Bearer wrong-token"), Some(TOKEN)] {
        let (status, _) = http_request(node.admin, "GET", "/admin/caches", auth, None).await;
        assert_eq!(status, 401, "{auth:?}");
    }
    let bearer = format!("Bearer {TOKEN}");
    let (status, body) =
        http_request(node.admin, "GET", "/admin/caches", Some(&bearer), None).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["caches"][0]["id"], "1561");
    assert_eq!(v["caches"][0]["credentials"][0]["username"], "alice");
    assert!(v["version"].as_u64().unwrap() >= 1);
    assert!(!body.contains("secret"), "{body}");
    let (status, _) = http_request(
        node.admin,
        "GET",
        "/admin/caches/nope/stats",
        Some(&bearer),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = http_request(
        node.admin,
        "POST",
        "/admin/login",
        Some(&bearer),
        Some(r#"{"username":"viewer","password":"viewer-secret"}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["cache_id"].as_str(), v["write"].as_bool()),
        (Some("1561"), Some(false))
    );
    let (status, _) = http_request(
        node.admin,
        "POST",
        "/admin/login",
        Some(&bearer),
        Some(r#"{"username":"viewer","password":"nope"}"#),
    )
    .await;
    assert_eq!(status, 403);
    // A replacement that breaks a rule is refused and changes nothing.
    let (status, body) = http_request(
        node.admin,
        "PUT",
        "/admin/caches/1561/credentials",
        Some(&bearer),
        Some(r#"{"credentials":[{"username":"new","primary":true,"write":true,"flush":true,"api":true}]}"#),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(node.sasl("alice", "alice-secret").await, 0);
    // A node without a token is refused before it binds.
    let mut config = common::base_config();
    config.caches_path = Some(node.caches.clone());
    config.admin = Some(AdminConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: None,
        tls: None,
    });
    assert!(matches!(
        Node::bind(config).await,
        Err(memgate::node::NodeError::AdminWithoutToken)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_across_two_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = AdminNode::first(dir.path(), "n1").await;
    let n2 = AdminNode::first(dir.path(), "n2").await;
    let api = start_analytics(&[&n1, &n2], dir.path(), TOKEN).await;

    // ---- login ----
    let (status, body) = api.call("GET", "/api/v1/login", None, None).await;
    assert_eq!((status, body.as_str()), (403, NOT_AUTHORIZED));
    for bad in [("alice", "wrong"), ("nobody", "x"), NOAPI] {
        let (status, body) = api.call("GET", "/api/v1/login", Some(bad), None).await;
        assert_eq!((status, body.as_str()), (403, NOT_AUTHORIZED), "{bad:?}");
    }
    assert_eq!(
        api.json("GET", "/api/v1/login", ALICE).await["cache_id"],
        1561
    );
    assert_eq!(
        api.json("GET", "/api/v1/login", BOB).await["cache_id"],
        2000
    );
    assert_eq!(api.json("GET", "/api/login", BOB).await["cache_id"], 2000);

    // ---- stats: one object per node, only for the caller's own cache ----
    let mut c = connect(n1.plain).await;
    c.expect(b"set alice 0 0 12\r\nalice-secret\r\n", b"STORED\r\n")
        .await;
    c.expect(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n").await;
    c.expect(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n").await;
    let stats = api.json("GET", "/api/v1/1561/stats", ALICE).await;
    let obj = stats.as_object().unwrap();
    assert_eq!(obj.len(), 2, "{stats}");
    let s1 = &stats[n1.label()];
    for field in memgate::node::stats::API_STATS {
        assert!(s1[*field].is_u64(), "{field} missing: {s1}");
    }
    assert_eq!(
        (s1["cmd_set"].as_u64(), s1["get_hits"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(s1["curr_items"], 1);
    assert_eq!(stats[n2.label()]["cmd_set"], 0);
    assert_eq!(s1["limit_maxbytes"], 8 << 20);
    for (path, cred) in [
        ("/api/v1/1561/stats", BOB),
        ("/api/v1/2000/stats", ALICE),
        ("/api/v1/1561/stats", NOAPI),
        ("/api/v1/1561/credentials", BOB),
        ("/api/v1/1561/history", BOB),
    ] {
        let (status, body) = api.call("GET", path, Some(cred), None).await;
        assert_eq!(
            (status, body.as_str()),
            (403, NOT_AUTHORIZED),
            "{path} {cred:?}"
        );
    }

    // ---- history: rows appear from the sampling loop ----
    eventually("history rows", || async {
        let h = api.json("GET", "/api/v1/1561/history", ALICE).await;
        h.as_array().unwrap().len() >= 4
    })
    .await;
    let h = api.json("GET", "/api/v1/1561/history", ALICE).await;
    let row = &h[0];
    assert_eq!(row["memcachier_id"], "1561");
    assert!([n1.label(), n2.label()].contains(&row["server"].as_str().unwrap().to_string()));
    assert!(row["stats"]["get_hits"].is_u64(), "{row}");
    assert!(row["timestamp"].as_str().unwrap().parse::<u64>().unwrap() > 1_600_000_000_000);
    let bob_history = api.json("GET", "/api/v1/2000/history", BOB).await;
    assert!(bob_history
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["memcachier_id"] == "2000"));

    // ---- flush needs the flush capability ----
    let (status, body) = api
        .call("POST", "/api/v1/1561/flush", Some(VIEWER), None)
        .await;
    assert_eq!((status, body.as_str()), (403, NOT_AUTHORIZED));
    c.expect(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n").await;
    let (status, body) = api
        .call("POST", "/api/v1/1561/flush", Some(ALICE), None)
        .await;
    assert_eq!((status, body.as_str()), (200, ""));
    c.expect(b"get k\r\n", b"END\r\n").await;

    // ---- credentials: list ----
    let list = api.json("GET", "/api/v1/1561/credentials", VIEWER).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["sasl_username"], "alice");
    assert_eq!(list[0]["primary"], true);
    assert_eq!(list[0]["cache_id"], 1561);
    assert_eq!(list[1]["write_capability"], false);
    assert_eq!(list[2]["api_capability"], false);
    assert!(list.iter().all(|c| c.get("sasl_password").is_none()));

    // ---- create: random username and password, returned once, on both nodes ----
    let created = api.json("POST", "/api/v1/1561/credentials", ALICE).await;
    let user = created["sasl_username"].as_str().unwrap().to_string();
    let pass = created["sasl_password"].as_str().unwrap().to_string();
    assert!(user.len() >= 8 && pass.len() >= 20, "{created}");
    assert_eq!(created["primary"], false);
    assert_eq!(created["flush_capability"], true);
    assert!(created.get("pending_nodes").is_none(), "{created}");
    let new = (user.as_str(), pass.as_str());
    for node in [&n1, &n2] {
        assert_eq!(
            node.sasl(&user, &pass).await,
            0,
            "new credential on {}",
            node.label()
        );
        let file = std::fs::read_to_string(&node.caches).unwrap();
        assert!(
            file.contains(&user) && file.contains("$argon2id$"),
            "{file}"
        );
        assert!(!file.contains(&pass), "password stored in plain text");
    }
    assert_eq!(
        api.json("GET", "/api/v1/login", new).await["cache_id"],
        1561
    );
    let list = api.json("GET", "/api/v1/1561/credentials", new).await;
    assert_eq!(list.as_array().unwrap().len(), 4);
    assert!(!list.to_string().contains(&pass));

    // ---- update capabilities: PATCH with JSON (strings, as documented), POST with a form ----
    let path = format!("/api/v1/1561/credentials/{user}");
    let (status, body) = api
        .call(
            "PATCH",
            &path,
            Some(ALICE),
            Some(r#"{"flush_capability":"false"}"#),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            &v["flush_capability"],
            &v["write_capability"],
            &v["api_capability"]
        ),
        (&Value::Bool(false), &Value::Bool(true), &Value::Bool(true))
    );
    let (status, body) = api
        .call("POST", "/api/v1/1561/flush", Some(new), None)
        .await;
    assert_eq!((status, body.as_str()), (403, NOT_AUTHORIZED));
    let (status, body) = api
        .call("POST", &path, Some(ALICE), Some("write_capability=false"))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = api
        .call(
            "PATCH",
            &format!("{path}?write_capability=maybe"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(status, 400);
    for node in [&n1, &n2] {
        let tenants = node.shared.tenants();
        let cred = tenants.file().caches[0]
            .credentials
            .iter()
            .find(|c| c.username == user)
            .unwrap()
            .clone();
        assert!(
            !cred.caps.write && !cred.caps.flush && cred.caps.api,
            "{}",
            node.label()
        );
        // Without write, a set is "not stored".
        let mut s = connect(node.plain).await;
        s.expect(
            format!("set {user} 0 0 {}\r\n{pass}\r\n", pass.len()).as_bytes(),
            b"STORED\r\n",
        )
        .await;
        s.expect(b"set k 0 0 1\r\nv\r\n", b"NOT_STORED\r\n").await;
    }

    // ---- unknown credential ----
    for (method, p) in [
        ("PATCH", "/api/v1/1561/credentials/nobody"),
        ("POST", "/api/v1/1561/credentials/primary/nobody"),
        ("DELETE", "/api/v1/1561/credentials/nobody"),
        ("DELETE", "/api/v1/1561/credentials/bob"), // another cache's
    ] {
        let (status, body) = api.call(method, p, Some(ALICE), None).await;
        assert_eq!(
            (status, body.as_str()),
            (404, NO_CREDENTIAL),
            "{method} {p}"
        );
    }

    // ---- promote: exactly one primary ----
    let promoted = api
        .json(
            "POST",
            &format!("/api/v1/1561/credentials/primary/{user}"),
            ALICE,
        )
        .await;
    assert_eq!(promoted["primary"], true);
    assert_eq!(promoted["sasl_username"], user.as_str());
    let list = api.json("GET", "/api/v1/1561/credentials", ALICE).await;
    let primaries: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["primary"] == true)
        .map(|c| c["sasl_username"].as_str().unwrap())
        .collect();
    assert_eq!(primaries, [user.as_str()]);
    for node in [&n1, &n2] {
        let file = CachesFile::load(&node.caches).unwrap();
        assert_eq!(
            file.caches[0].primary().unwrap().username,
            user,
            "{}",
            node.label()
        );
    }

    // ---- delete: never the primary ----
    let (status, body) = api.call("DELETE", &path, Some(ALICE), None).await;
    assert_eq!((status, body.as_str()), (403, PRIMARY_NOT_DELETABLE));
    let (status, body) = api
        .call("DELETE", "/api/v1/1561/credentials/alice", Some(new), None)
        .await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, _) = api.call("GET", "/api/v1/login", Some(ALICE), None).await;
    assert_eq!(status, 403);
    for node in [&n1, &n2] {
        assert_ne!(
            node.sasl("alice", "alice-secret").await,
            0,
            "{}",
            node.label()
        );
        assert_eq!(node.sasl(&user, &pass).await, 0);
        assert_eq!(node.sasl("bob", "bob-secret").await, 0);
    }
    let list = api.json("GET", "/api/v1/1561/credentials", new).await;
    assert_eq!(list.as_array().unwrap().len(), 3);

    // ---- metrics name the endpoints ----
    let text = memgate::metrics::install().render();
    assert!(
        text.contains("memgate_analytics_requests_total")
            && text.contains("endpoint=\"/api/v1/{cache_id}/credentials/{cred_id}\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_during_a_change_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = AdminNode::first(dir.path(), "n1").await;
    let mut n2 = AdminNode::first(dir.path(), "n2").await;
    let api = start_analytics(&[&n1, &n2], dir.path(), TOKEN).await;

    n2.stop().await;
    let server_error = format!("Server error: {}", n2.label());
    let (status, body) = api
        .call("GET", "/api/v1/1561/stats", Some(ALICE), None)
        .await;
    assert_eq!((status, body.as_str()), (500, server_error.as_str()));
    let (status, body) = api
        .call("POST", "/api/v1/1561/flush", Some(ALICE), None)
        .await;
    assert_eq!((status, body.as_str()), (500, server_error.as_str()));

    // The change lands on n1 at once; the reply names n2 as behind.
    let created = api.json("POST", "/api/v1/1561/credentials", ALICE).await;
    let user = created["sasl_username"].as_str().unwrap().to_string();
    let pass = created["sasl_password"].as_str().unwrap().to_string();
    assert_eq!(created["pending_nodes"], serde_json::json!([n2.label()]));
    assert_eq!(n1.sasl(&user, &pass).await, 0);
    // A second change queues behind the first, in order.
    let (status, body) = api
        .call(
            "PATCH",
            &format!("/api/v1/1561/credentials/{user}"),
            Some(ALICE),
            Some(r#"{"api_capability":false}"#),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("pending_nodes"), "{body}");

    // n2 comes back with its old caches file, and catches up.
    n2.restart().await;
    eventually("n2 applies the pending changes", || {
        let n2 = &n2;
        let (user, pass) = (user.clone(), pass.clone());
        async move {
            n2.shared.tenants().file().caches[0]
                .credentials
                .iter()
                .any(|c| c.username == user && !c.caps.api)
                && n2.sasl(&user, &pass).await == 0
        }
    })
    .await;
    // The change was persisted: it survives another restart.
    n2.stop().await;
    n2.restart().await;
    assert_eq!(n2.sasl(&user, &pass).await, 0);
    let stats = api.json("GET", "/api/v1/1561/stats", ALICE).await;
    assert_eq!(stats.as_object().unwrap().len(), 2);

    // With every node down, a login not checked recently cannot be checked,
    // and stats name both nodes.
    n2.stop().await;
    let mut n1 = n1;
    n1.stop().await;
    let (status, body) = api.call("GET", "/api/v1/login", Some(VIEWER), None).await;
    assert_eq!(status, 500);
    assert!(body.starts_with("Server error: "), "{body}");
    let (status, body) = api
        .call("GET", "/api/v1/1561/stats", Some(ALICE), None)
        .await;
    assert_eq!(
        (status, body),
        (500, format!("Server error: {},{}", n1.label(), n2.label()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_admin_token_is_a_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = AdminNode::first(dir.path(), "n1").await;
    let api = start_analytics(&[&n1], dir.path(), "not-the-right-token-at-all").await;
    let (status, body) = api.call("GET", "/api/v1/login", Some(ALICE), None).await;
    assert_eq!(
        (status, body),
        (500, format!("Server error: {}", n1.label()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_behind_cannot_admit_a_deleted_credential() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = AdminNode::first(dir.path(), "n1").await;
    let mut n2 = AdminNode::first(dir.path(), "n2").await;
    // Retries every 5 s: n2 stays behind for a while after it is back.
    let api =
        start_analytics_every(&[&n1, &n2], dir.path(), TOKEN, Duration::from_secs(3600)).await;
    n2.stop().await;
    let (status, body) = api
        .call(
            "DELETE",
            "/api/v1/1561/credentials/viewer",
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&n2.label()), "{body}");
    n2.restart().await;
    // n2 still has viewer, but only the up-to-date n1 is asked.
    let (status, body) = api.call("GET", "/api/v1/login", Some(VIEWER), None).await;
    assert_eq!((status, body.as_str()), (403, NOT_AUTHORIZED));
    assert_eq!(
        api.json("GET", "/api/v1/login", ALICE).await["cache_id"],
        1561
    );
    eventually("n2 drops viewer", || async {
        n2.sasl("viewer", "viewer-secret").await != 0
    })
    .await;
    let list = api.json("GET", "/api/v1/1561/credentials", ALICE).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
}

// ---- the binary, as an operator runs it ----

#[test]
fn bad_configuration_exits_64_with_one_line() {
    for args in [
        vec![
            "node",
            "--caches",
            "x.toml",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        vec!["analytics", "--nodes", "127.0.0.1:1"],
        vec!["analytics", "--nodes", "nope", "--admin-token", TOKEN],
        vec![
            "analytics",
            "--nodes",
            "127.0.0.1:1",
            "--admin-token",
            TOKEN,
            "--retention",
            "0d",
        ],
    ] {
        let exit = common::process::run(&args, &[]);
        let stderr = exit.stderr;
        assert_eq!(exit.code, 64, "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binaries_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let caches = write_caches(dir.path(), "caches.toml", &caches());
    let node = spawn(
        &[],
        &[
            "node",
            "--caches",
            caches.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[
            ("MEMGATE_NODE_ADMIN_LISTEN", "127.0.0.1:0"),
            ("MEMGATE_NODE_ADMIN_TOKEN", TOKEN),
        ],
        &["plain", "admin"],
    );
    let (plain, admin) = (node.addr("plain"), node.addr("admin"));
    let nodes = format!("{plain}={admin}");
    let db = dir.path().join("analytics.sqlite");
    let analytics = spawn(
        &[],
        &[
            "analytics",
            "--listen",
            "127.0.0.1:0",
            "--db",
            db.to_str().unwrap(),
        ],
        &[
            ("MEMGATE_ANALYTICS_NODES", &nodes),
            ("MEMGATE_ANALYTICS_ADMIN_TOKEN", TOKEN),
        ],
        &["api"],
    );
    let api = analytics.addr("api");
    let alice = basic_auth("alice", "alice-secret");
    let (status, body) = http_request(api, "GET", "/api/v1/login", Some(&alice), None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"cache_id":1561}"#));
    let (status, body) = http_request(api, "GET", "/api/v1/1561/stats", Some(&alice), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("\"{plain}\"")), "{body}");
    let (status, body) =
        http_request(api, "POST", "/api/v1/1561/credentials", Some(&alice), None).await;
    assert_eq!(status, 200, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    let (user, pass) = (
        created["sasl_username"].as_str().unwrap(),
        created["sasl_password"].as_str().unwrap(),
    );
    assert_eq!(connect(plain).await.sasl_login(user, pass).await, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for p in [&node, &analytics] {
        let log = p.log();
        assert!(
            !log.contains("alice-secret") && !log.contains(pass) && !log.contains(TOKEN),
            "a secret was logged: {log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_changes_survive_a_restart_of_analytics() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = AdminNode::first(dir.path(), "n1").await;
    let mut n2 = AdminNode::first(dir.path(), "n2").await;
    let api = start_analytics(&[&n1, &n2], dir.path(), TOKEN).await;
    n2.stop().await;
    let created = api.json("POST", "/api/v1/1561/credentials", ALICE).await;
    let user = created["sasl_username"].as_str().unwrap().to_string();
    let pass = created["sasl_password"].as_str().unwrap().to_string();
    assert_eq!(created["pending_nodes"], serde_json::json!([n2.label()]));
    // Analytics stops before n2 is back; a new one (same database) finishes the job.
    drop(api);
    tokio::time::sleep(Duration::from_millis(100)).await;
    n2.restart().await;
    assert_ne!(n2.sasl(&user, &pass).await, 0);
    let _api = start_analytics(&[&n1, &n2], dir.path(), TOKEN).await;
    eventually("n2 gets the credential", || async {
        n2.sasl(&user, &pass).await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cache_is_disabled_everywhere_and_enabled_again() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = AdminNode::first(dir.path(), "n1").await;
    let n2 = AdminNode::first(dir.path(), "n2").await;
    let svc = start_analytics_with(&[&n1, &n2], |c| {
        c.disable_after = Some(Duration::from_secs(2));
    })
    .await;
    // Cache 2000 stays busy (a login every 300 ms on n2); 1561 sees nothing.
    let n2_plain = n2.plain;
    let busy = tokio::spawn(async move {
        loop {
            connect(n2_plain).await.sasl_login(BOB.0, BOB.1).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    // Watched without logging in (a login is activity).
    let disabled = |n: &AdminNode| n.shared.tenants().get("1561").unwrap().is_disabled();
    eventually("1561 disabled on both nodes", || async {
        disabled(&n1) && disabled(&n2)
    })
    .await;
    assert_eq!(n1.sasl(ALICE.0, ALICE.1).await, 0x20);
    assert_eq!(n2.sasl(ALICE.0, ALICE.1).await, 0x20);
    assert_eq!(
        n2.sasl(BOB.0, BOB.1).await,
        0,
        "the busy cache stays enabled"
    );
    // Persisted: a restarted node keeps it disabled.
    let file = std::fs::read_to_string(&n1.caches).unwrap();
    assert!(file.contains("disabled = true"), "{file}");
    // Its owner still gets in to the API, and enables it again.
    assert_eq!(
        svc.json("GET", "/api/v1/login", ALICE).await["cache_id"],
        1561
    );
    let (status, body) = svc
        .call("POST", "/api/v1/1561/enable", Some(VIEWER), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(n1.sasl(ALICE.0, ALICE.1).await, 0);
    assert_eq!(n2.sasl(ALICE.0, ALICE.1).await, 0);
    // Another cache's credential, or none, cannot.
    let (status, _) = svc
        .call("POST", "/api/v1/1561/enable", Some(BOB), None)
        .await;
    assert_eq!(status, 403);
    busy.abort();
}

/// A node server config for 127.0.0.1 that requires client certificates
/// from `client_ca`.
fn mutual_tls_server(pki: &common::TestPki, client_ca: &str) -> Arc<rustls::ServerConfig> {
    let issued = pki
        .ca
        .issue_node("localhost", &["localhost", "127.0.0.1"])
        .unwrap();
    memgate::tls::server_config(
        memgate::tls::certs_from_pem(issued.cert_pem.as_bytes()).unwrap(),
        memgate::tls::key_from_pem(issued.key_pem.as_bytes()).unwrap(),
        Some(memgate::tls::roots_from_pem(client_ca.as_bytes()).unwrap()),
    )
    .unwrap()
}

/// A client config trusting `pki`, presenting a certificate from `issuer`.
fn analytics_client(
    pki: &common::TestPki,
    issuer: Option<&common::TestPki>,
) -> Arc<rustls::ClientConfig> {
    let cert = issuer.map(|i| {
        let issued = i.ca.issue_client("memgate-analytics").unwrap();
        (
            memgate::tls::certs_from_pem(issued.cert_pem.as_bytes()).unwrap(),
            memgate::tls::key_from_pem(issued.key_pem.as_bytes()).unwrap(),
        )
    });
    memgate::tls::client_config(pki.ca_pem().as_bytes(), cert).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_over_mutual_tls() {
    let pki = common::TestPki::new();
    let server = mutual_tls_server(&pki, &pki.ca_pem());
    let node = common::start_node(Some(&caches()), false, |c| {
        c.admin = Some(AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: None,
            tls: Some(server),
        });
    })
    .await;
    let admin = node.admin.unwrap();
    let nodes = format!("n1={admin}");
    let with = |tls| {
        let mut c = common::analytics_config(&nodes, None);
        c.tls = Some(tls);
        c
    };
    // A client certificate from the cluster CA: everything works, no token.
    let (addr, _stop) = common::start_analytics(with(analytics_client(&pki, Some(&pki)))).await;
    let auth = basic_auth(ALICE.0, ALICE.1);
    let (status, body) = http_request(addr, "GET", "/api/v1/1561/stats", Some(&auth), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"n1\""), "{body}");
    // No client certificate, or one from another CA: the node is unusable.
    let other = common::TestPki::new();
    for client in [
        analytics_client(&pki, None),
        analytics_client(&pki, Some(&other)),
    ] {
        let (addr, _stop) = common::start_analytics(with(client)).await;
        let (status, body) = http_request(addr, "GET", "/api/v1/login", Some(&auth), None).await;
        assert_eq!((status, body.as_str()), (500, "Server error: n1"));
    }
    // Plain HTTP to the admin port gets no HTTP answer at all.
    let (status, _) = http_request(admin, "GET", "/admin/caches", None, None).await;
    assert_eq!(status, 0);
}

/// Hot keys through a real node: the first question starts the counting;
/// then the owner's API lists the hot key with its exact count (no sampling
/// at this rate) and a key of any bytes escaped, the operator's admin view
/// shows the same counts under hashed keys, and no other credential gets
/// an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_keys_for_the_owner_hashed_for_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = AdminNode::first(dir.path(), "n1").await;
    let api = start_analytics(&[&n1], dir.path(), TOKEN).await;
    let path = "/api/v1/1561/hotkeys";

    let first = api.json("GET", path, ALICE).await;
    assert_eq!(
        (
            first["ops"].as_u64(),
            first["by_ops"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0)),
        "{first}"
    );
    assert!(
        first["servers"][n1.label()]["since"].as_u64().unwrap() > 0,
        "{first}"
    );
    for (p, cred) in [(path, BOB), (path, NOAPI), ("/api/v1/2000/hotkeys", ALICE)] {
        let (status, body) = api.call("GET", p, Some(cred), None).await;
        assert_eq!(
            (status, body.as_str()),
            (403, NOT_AUTHORIZED),
            "{p} {cred:?}"
        );
    }
    let (status, _) = api.call("GET", path, None, None).await;
    assert_eq!(status, 403);
    let (status, _) = api
        .call("GET", &format!("{path}?limit=0"), Some(ALICE), None)
        .await;
    assert_eq!(status, 400);

    // 1 set + 300 gets of the hot key (text), 7 × 10 KB of "big" (the last
    // read by a meta get), one op on each of 50 cold keys, and a binary set
    // and get of a key no text line can hold.
    let mut c = connect(n1.plain).await;
    c.expect(b"set alice 0 0 12\r\nalice-secret\r\n", b"STORED\r\n")
        .await;
    let hot = "hot<&>\"key";
    let value = "v".repeat(100);
    c.expect(
        format!("set {hot} 0 0 100\r\n{value}\r\n").as_bytes(),
        b"STORED\r\n",
    )
    .await;
    let gets = format!("get {hot}\r\n").repeat(300);
    let hit = format!("VALUE {hot} 0 100\r\n{value}\r\nEND\r\n").repeat(300);
    c.expect(gets.as_bytes(), hit.as_bytes()).await;
    let big = "b".repeat(10_000);
    c.expect(
        format!("set big 0 0 10000\r\n{big}\r\n").as_bytes(),
        b"STORED\r\n",
    )
    .await;
    let hit = format!("VALUE big 0 10000\r\n{big}\r\nEND\r\n").repeat(5);
    c.expect("get big\r\n".repeat(5).as_bytes(), hit.as_bytes())
        .await;
    c.expect(b"mg big s\r\n", b"HD s10000\r\n").await;
    for i in 0..50 {
        c.expect(format!("get cold{i}\r\n").as_bytes(), b"END\r\n")
            .await;
    }
    let mut b = connect(n1.plain).await;
    assert_eq!(b.sasl_login(ALICE.0, ALICE.1).await, 0);
    let odd = b"bin\x00\xff\\key";
    b.send(&common::bin_request(0x01, odd, &[0; 8], b"x", 0, 0))
        .await;
    assert_eq!(b.read_bin().await.status, 0);
    b.send(&common::bin_request(0x00, odd, &[], b"", 0, 0))
        .await;
    assert_eq!(b.read_bin().await.status, 0);

    let v = api.json("GET", path, ALICE).await;
    let total = 301 + 7 + 50 + 2;
    assert_eq!(v["ops"], total, "{v}");
    let top = &v["by_ops"][0];
    assert_eq!(
        (
            top["key"].as_str(),
            top["ops"].as_u64(),
            top["error"].as_u64()
        ),
        (Some(hot), Some(301), Some(0)),
        "{v}"
    );
    assert_eq!(top["server"], n1.label());
    assert!((top["share"].as_f64().unwrap() - 301.0 / total as f64).abs() < 1e-9);
    assert_eq!(v["by_bytes"][0]["key"], "big");
    assert_eq!(v["by_bytes"][0]["bytes"], 7 * 10_003);
    let odd_ops = v["by_ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == r"bin\x00\xff\\key")
        .map(|k| k["ops"].clone());
    assert_eq!(odd_ops, Some(Value::from(2)), "{v}");

    // The operator's view: the same counts, keys hashed, the same hash for
    // the same key from one question to the next.
    let bearer = format!("Bearer {TOKEN}");
    let admin = |p: &'static str| {
        let bearer = bearer.clone();
        let addr = n1.admin;
        async move { http_request(addr, "GET", p, Some(&bearer), None).await }
    };
    let (status, body) = admin("/admin/caches/1561/hotkeys").await;
    assert_eq!(status, 200, "{body}");
    for plain in ["hot<", "big", "cold", "bin"] {
        assert!(!body.contains(plain), "{plain} in {body}");
    }
    let op: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(op["keys"], "hashed");
    let hashed = op["by_ops"][0]["key"].as_str().unwrap().to_owned();
    assert!(
        hashed.len() == 16 && hashed.bytes().all(|b| b.is_ascii_hexdigit()),
        "{hashed}"
    );
    assert_eq!(op["by_ops"][0]["count"], 301);
    assert_eq!(op["by_bytes"][0]["count"], 7 * 10_003);
    let (_, again) = admin("/admin/caches/1561/hotkeys?limit=1").await;
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["by_ops"][0]["key"], hashed.as_str());
    assert_eq!(again["by_ops"].as_array().unwrap().len(), 1);
    assert_eq!(admin("/admin/caches/1561/hotkeys?keys=raw").await.0, 400);
    assert_eq!(admin("/admin/caches/nope/hotkeys").await.0, 404);
    let (status, _) = http_request(n1.admin, "GET", "/admin/caches/1561/hotkeys", None, None).await;
    assert_eq!(status, 401);
}
