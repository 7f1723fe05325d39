//! The proxy's TOML config file: `ProxyArgs` (compiled in from the binary's
//! own `src/cli/proxy.rs`) deserialized and turned into a `ProxyConfig` with
//! a fixed environment. A config that validates keeps the rules
//! `into_config` enforces.
//!
//! The TLS file paths are replaced by fixture files written once, so that
//! fuzzed paths never make the target read arbitrary files (`/dev/zero`);
//! whether a path was given still decides the branches.
#![no_main]

#[path = "../../../src/cli/proxy.rs"]
mod proxy;

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use memgate::pki::CertificateAuthority;
use proxy::ProxyArgs;

/// A CA and a client certificate and key, as PEM files.
struct Fixture {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Written once into the fuzz crate's target directory: a whole directory is
/// renamed into place, so concurrent jobs agree on one CA and key pair.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
        let dir = target.join("proxy-tls-fixture");
        if !dir.join("client-key.pem").exists() {
            let staging = target.join(format!("proxy-tls-fixture.{}", std::process::id()));
            std::fs::create_dir_all(&staging).expect("fixture dir");
            let ca = CertificateAuthority::generate("memgate fuzz CA").expect("CA");
            let client = ca.issue_client("fuzz").expect("client cert");
            for (name, pem) in [
                ("ca.pem", ca.cert_pem()),
                ("client.pem", &client.cert_pem),
                ("client-key.pem", &client.key_pem),
            ] {
                std::fs::write(staging.join(name), pem).expect("fixture file");
            }
            // Losing the race to another job is fine: its fixture is as good.
            if std::fs::rename(&staging, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&staging);
            }
        }
        Fixture {
            ca: dir.join("ca.pem"),
            cert: dir.join("client.pem"),
            key: dir.join("client-key.pem"),
        }
    })
}

/// The hosted service's variables, with an empty MEMCACHIER_PASSWORD so that
/// the MEMCACHE_* fallback is taken.
fn env(name: &str) -> Option<String> {
    let value = match name {
        "MEMCACHE_SERVERS" => "127.0.0.1:11211,node-b:11212:2",
        "MEMCACHIER_USERNAME" => "15F38e",
        "MEMCACHIER_PASSWORD" => "",
        "MEMCACHE_PASSWORD" => "0c3a1b2d4e5f",
        _ => return None,
    };
    Some(value.to_owned())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut args) = toml::from_str::<ProxyArgs>(text) else {
        return;
    };
    let fixture = fixture();
    let replace = |path: &mut Option<PathBuf>, with: &PathBuf| {
        if path.is_some() {
            *path = Some(with.clone());
        }
    };
    replace(&mut args.ca, &fixture.ca);
    replace(&mut args.client_cert, &fixture.cert);
    replace(&mut args.client_key, &fixture.key);
    let allow_remote = args.allow_remote;
    // The thread count is read on its own, before the runtime starts.
    let threads = args.threads();
    if let Ok(threads) = threads {
        assert!((1..=1024).contains(&threads), "{threads} threads");
    }
    let Ok(config) = args.into_config(&env) else {
        return;
    };
    assert!(config.listen.ip().is_loopback() || allow_remote);
    assert!(!config.servers.is_empty());
    assert!(!config.timeout.is_zero() && !config.down_retry_delay.is_zero());
    assert!(config.failure_limit >= 1 && config.connections_per_node >= 1);
    // Busy polling: a window of up to 1 ms, on the one event loop only.
    if let Some(window) = config.busy_poll {
        assert!(!window.is_zero() && window <= std::time::Duration::from_millis(1));
        assert_eq!(threads.ok(), Some(1), "busy polling with more threads");
    }
});
