use std::time::Duration;

use super::*;

fn parse(args: &[&str]) -> Role {
    let mut all = vec!["memgate"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).unwrap().role
}

/// `memgate node ARGS` validated: the admin config, or the error text.
fn node_admin(args: &[&str]) -> Result<Option<memgate::node::admin::AdminConfig>, String> {
    let Role::Node(node) = parse(&[&["node"], args].concat()) else {
        panic!()
    };
    node.into_config()
        .map(|c| c.admin)
        .map_err(|e| e.to_string())
}

#[test]
fn node_admin_is_off_by_default_and_needs_a_token() {
    assert!(node_admin(&["--caches", "c.toml"]).unwrap().is_none());
    let e = node_admin(&["--admin-listen", "127.0.0.1:0"]).unwrap_err();
    assert!(e.contains("--admin-token"), "{e}");
    let e = node_admin(&["--admin-listen", "127.0.0.1:0", "--admin-token", "short"]).unwrap_err();
    assert!(e.contains("16") && !e.contains("short"), "{e}");
    let admin = node_admin(&[
        "--admin-listen",
        "127.0.0.1:0",
        "--admin-token",
        "a-long-enough-token",
    ])
    .unwrap()
    .unwrap();
    assert_eq!(admin.token.as_deref(), Some("a-long-enough-token"));
    // --admin-ca needs the node's certificate and an admin listener.
    assert!(Cli::try_parse_from(["memgate", "node", "--admin-ca", "ca.pem"]).is_err());
    let e = node_admin(&["--cert", "c.pem", "--key", "k.pem", "--admin-ca", "ca.pem"]).unwrap_err();
    assert!(e.contains("--admin-listen"), "{e}");
}

#[test]
fn node_what_if_is_on_unless_turned_off() {
    let what_if = |args: &[&str]| {
        let Role::Node(node) = parse(&[&["node", "--caches", "c.toml"], args].concat()) else {
            panic!()
        };
        node.into_config().unwrap().what_if
    };
    assert!(what_if(&[]));
    assert!(what_if(&["--what-if", "on"]));
    assert!(!what_if(&["--what-if", "off"]));
    assert!(Cli::try_parse_from(["memgate", "node", "--what-if", "maybe"]).is_err());
}

#[test]
fn analytics_flags() {
    let Role::Analytics(args) = parse(&[
        "analytics",
        "--nodes",
        "10.0.0.1:11211=10.0.0.1:9400,10.0.0.2:9400",
        "--admin-token",
        "a-long-enough-token",
        "--sample-interval",
        "1m",
    ]) else {
        panic!()
    };
    let c = args.into_config().unwrap();
    assert_eq!(c.nodes.len(), 2);
    assert_eq!(c.nodes[0].label, "10.0.0.1:11211");
    assert_eq!(c.sample_interval, Duration::from_secs(60));
    assert_eq!(c.retention, Duration::from_secs(30 * 86_400));
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.disable_after, None);
    assert!(c.tls.is_none());
    // A client certificate needs its key and the CA.
    assert!(Cli::try_parse_from([
        "memgate",
        "analytics",
        "--nodes",
        "a:1",
        "--client-cert",
        "c.pem"
    ])
    .is_err());
    for bad in [
        vec![
            "analytics",
            "--nodes",
            "nope",
            "--admin-token",
            "a-long-enough-token",
        ],
        vec!["analytics", "--nodes", "a:1"],
    ]
    .into_iter()
    .chain(["--sample-interval", "--disable-after"].map(|flag| {
        let token = ["--admin-token", "a-long-enough-token"];
        [&["analytics", "--nodes", "a:1"][..], &token, &[flag, "0s"]].concat()
    })) {
        let Role::Analytics(args) = parse(&bad) else {
            panic!()
        };
        assert!(args.into_config().is_err(), "{bad:?}");
    }
}
