//! Real memcached clients and conformance tools against in-process nodes.
//! These need the packages `.ci/run` installs (python clients, ruby-dalli,
//! libmemcached-tools).

mod common;

use common::*;

/// Run tests/clients/SCRIPT against a node's plain and TLS listeners, with
/// its CA file and login.
async fn against_a_node(interpreter: &str, script: &str) -> String {
    let node = start_node(Some(&proxy_cache()), true, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, node.ca_pem.as_ref().unwrap()).unwrap();
    let (plain, tls) = (
        node.plain.unwrap().to_string(),
        node.tls.unwrap().to_string(),
    );
    let args = [&plain, &tls, ca.to_str().unwrap(), PROXY_USER, PROXY_PASS];
    client_script(interpreter, script, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_plain_and_tls() {
    let out = against_a_node("python3", "node_clients.py").await;
    assert!(out.contains("all python clients: ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dalli_plain_and_tls() {
    let out = against_a_node("ruby", "node_dalli.rb").await;
    assert!(out.contains("dalli tls: ok"), "{out}");
    assert!(out.contains("dalli wrong password: refused"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memccapable_ascii() {
    let node = start_node(None, false, |_| {}).await;
    memccapable(node.plain.unwrap(), "-a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memccapable_binary() {
    let node = start_node(None, false, |_| {}).await;
    memccapable(node.plain.unwrap(), "-b").await;
}
