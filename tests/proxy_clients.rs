//! Real memcached clients through the sidecar, in front of three in-process
//! TLS nodes: pymemcache, pylibmc (text and binary, with and without
//! credentials), python-binary-memcached, meta-memcache (the meta protocol's
//! herd control), Dalli, php-memcached and
//! libmemcached's `memccapable` in both modes. Each client script asserts its
//! values byte for byte and ends with an "ok" line checked here.
//!
//! These need the packages `.ci/run` installs.

mod common;

use common::*;

/// Three TLS nodes and a proxy in front of them.
async fn cluster() -> (TestPki, Vec<TestNode>, TestProxy) {
    let pki = TestPki::new();
    let nodes = start_tls_nodes(&pki, 3).await;
    let proxy = start_proxy(proxy_config(&server_entries(&nodes), &pki.ca_pem())).await;
    (pki, nodes, proxy)
}

/// Run tests/clients/SCRIPT with the proxy's address and its login.
async fn through_the_proxy(interpreter: &str, script: &str) -> String {
    let (_pki, nodes, proxy) = cluster().await;
    let addr = proxy.addr.to_string();
    let out = client_script(interpreter, script, &[&addr, PROXY_USER, PROXY_PASS]).await;
    // The traffic really went through to the nodes, spread over all three.
    let items: Vec<u64> = nodes
        .iter()
        .map(|n| n.shared.tenants().get("42").unwrap().store.usage().items)
        .collect();
    assert!(items.iter().all(|&n| n > 0), "{items:?}\n{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_through_the_proxy() {
    let out = through_the_proxy("python3", "proxy_clients.py").await;
    for line in [
        "pymemcache text: ok",
        "pymemcache ascii auth: ok",
        "pylibmc text: ok",
        "pylibmc text with credentials: refused by pylibmc itself",
        "pylibmc binary: ok",
        "pylibmc binary with credentials: ok",
        "python-binary-memcached with credentials: ok",
        "all python clients through the proxy: ok",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_memcache_herd_control_through_the_proxy() {
    let out = through_the_proxy("python3", "proxy_meta_memcache.py").await;
    for line in [
        "get_or_lease: ok",
        "stale on delete: ok",
        "RecachePolicy: ok",
        "set_cas: ok",
        "deltas: ok",
        "meta-memcache through the proxy: ok",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dalli_through_the_proxy() {
    let out = through_the_proxy("ruby", "proxy_dalli.rb").await;
    assert!(out.contains("dalli without credentials: ok"), "{out}");
    assert!(out.contains("dalli with credentials: ok"), "{out}");
    assert!(out.contains("dalli through the proxy: ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_memcached_through_the_proxy() {
    let out = through_the_proxy("php", "proxy_php.php").await;
    assert!(out.contains("php-memcached binary with sasl: ok"), "{out}");
    assert!(out.contains("php-memcached text: ok"), "{out}");
    assert!(out.contains("php-memcached through the proxy: ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memccapable_ascii_through_the_proxy() {
    let (_pki, _nodes, proxy) = cluster().await;
    memccapable(proxy.addr, "-a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memccapable_binary_through_the_proxy() {
    let (_pki, _nodes, proxy) = cluster().await;
    memccapable(proxy.addr, "-b").await;
}
