//! Real memcached clients and conformance tools against in-process nodes.
//! These need the packages `.ci/run` installs (python clients, ruby-dalli,
//! libmemcached-tools).

mod common;

use std::process::Command;

use common::*;

async fn client_script(interpreter: &str, script: &str) -> String {
    let node = start_node(Some(PROXY_CACHE), true, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, node.ca_pem.as_ref().unwrap()).unwrap();
    let mut cmd = Command::new(interpreter);
    cmd.arg(format!(
        "{}/tests/clients/{script}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .arg(node.plain.unwrap().to_string())
    .arg(node.tls.unwrap().to_string())
    .arg(&ca)
    .args([PROXY_USER, PROXY_PASS]);
    run_ok(cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_plain_and_tls() {
    let out = client_script("python3", "node_clients.py").await;
    assert!(out.contains("all python clients: ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dalli_plain_and_tls() {
    let out = client_script("ruby", "node_dalli.rb").await;
    assert!(out.contains("dalli tls: ok"), "{out}");
    assert!(out.contains("dalli wrong password: refused"), "{out}");
}

async fn memccapable(mode: &str) {
    let node = start_node(None, false, |_| {}).await;
    let addr = node.plain.unwrap();
    let mut cmd = Command::new("memccapable");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &addr.port().to_string(),
        "-t",
        "5",
        mode,
    ]);
    let out = run_ok(cmd).await;
    assert!(out.contains("All tests passed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memccapable_ascii() {
    memccapable("-a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memccapable_binary() {
    memccapable("-b").await;
}
