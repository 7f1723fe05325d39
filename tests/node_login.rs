//! The login path over real sockets: the failed-login throttle and the
//! verified-secret cache.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use common::*;
use memgate::auth::{self, throttle, Secret};
use tokio::net::{TcpSocket, TcpStream};

/// A client whose connection comes from `source` (any 127.x address is
/// loopback on Linux), so one test can play several addresses.
async fn connect_from(source: &str, addr: SocketAddr) -> Client<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    Client::new(socket.connect(addr).await.unwrap())
}

/// The throttle counter's value for `reason`, 0 before its first increment.
async fn throttled(node: &TestNode, reason: &str) -> u64 {
    let (_, body) = http_get(node.metrics.unwrap(), "/metrics").await;
    let line = format!("memgate_node_auth_throttled_total{{reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// What a throttled SASL login's reply carries, after status 0x20.
const THROTTLED_BODY: &[u8] = b"Auth failure. Too many failed logins, retry later.";

#[tokio::test]
async fn a_wrong_password_flood_is_throttled_while_others_log_in() {
    let node = start_node(Some(&two_caches()), false, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let addr = node.plain.unwrap();
    let before = throttled(&node, "username").await;
    let mut flood = connect_from("127.0.0.2", addr).await;
    for _ in 0..throttle::FREE_FAILURES {
        assert_eq!(flood.sasl_login("alice", "guess").await, 0x20);
    }
    // Blocked now. The username is refused from any address, at once,
    // saying so, even with the right password: the throttle does not look
    // at it. SASL and the ASCII login alike.
    let sasl = async {
        let mut elsewhere = connect_from("127.0.0.4", addr).await;
        let t = Instant::now();
        elsewhere
            .send(&bin_request(
                0x21,
                b"PLAIN",
                &[],
                b"\0alice\0alice-secret",
                7,
                0,
            ))
            .await;
        let reply = elsewhere.read_bin().await;
        assert_eq!(
            (reply.status, reply.value.as_slice()),
            (0x20, THROTTLED_BODY)
        );
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    };
    let text = async {
        let mut text = connect_from("127.0.0.5", addr).await;
        text.expect(
            b"set alice 0 0 12\r\nalice-secret\r\n",
            b"CLIENT_ERROR authentication failure: too many failed logins, retry later\r\n",
        )
        .await;
    };
    // Another address logs in to another cache as if nothing happened.
    let other = async {
        let mut other = connect_from("127.0.0.3", addr).await;
        assert_eq!(other.sasl_login("bob", "bob secret").await, 0);
        other.send(&bin_request(0x00, b"k", &[], &[], 1, 0)).await;
        assert_eq!(other.read_bin().await.status, 0x01);
    };
    tokio::join!(sasl, text, other);
    assert_eq!(throttled(&node, "username").await, before + 2);
    // The blocked address's connection is not read before the block ends:
    // its next attempt is checked then, fails, and doubles the block.
    let t = Instant::now();
    assert_eq!(flood.sasl_login("alice", "guess").await, 0x20);
    assert!(t.elapsed() >= throttle::BASE_DELAY / 2, "{:?}", t.elapsed());
    // Refused attempts count as the cache's failed logins.
    let tenants = node.shared.tenants();
    let errors = &tenants.get("1561").unwrap().stats.auth_errors;
    assert_eq!(
        errors.load(Ordering::Relaxed),
        u64::from(throttle::FREE_FAILURES) + 3
    );

    // When the block is over, the right password works and resets it.
    tokio::time::sleep(2 * throttle::BASE_DELAY + Duration::from_millis(200)).await;
    let mut again = connect_from("127.0.0.2", addr).await;
    assert_eq!(again.sasl_login("alice", "alice-secret").await, 0);
}

/// A flood of wrong passwords for a hashed credential, over several
/// connections at once, is answered without a hash per attempt, while
/// another cache's hashed credential logs in promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_answered_without_hashing() {
    let victim = hashed_credential(
        "victim",
        &auth::hash_password("victim-pw").unwrap(),
        &["primary = true"],
    );
    let other = hashed_credential(
        "other",
        &auth::hash_password("other-pw").unwrap(),
        &["primary = true"],
    );
    let caches = cache("v", "1MiB", &[], &[victim]) + &cache("o", "1MiB", &[], &[other]);
    let node = start_node(Some(&caches), false, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let addr = node.plain.unwrap();
    // The free failures, each a new password, are hashed: that is what one
    // hash costs here (a repeated one would be refused from memory).
    let mut first = connect_from("127.0.0.2", addr).await;
    let t = Instant::now();
    for i in 0..throttle::FREE_FAILURES {
        let guess = format!("guess{i}");
        assert_eq!(first.sasl_login("victim", &guess).await, 0x20);
    }
    let hash = t.elapsed() / throttle::FREE_FAILURES;
    // Four connections send 25 wrong logins each, pipelined, at once, from
    // another address (whose connections are not held back): the blocked
    // username refuses them all at once.
    const PER_CONNECTION: usize = 25;
    let before = throttled(&node, "username").await;
    let t = Instant::now();
    let floods: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = connect_from("127.0.0.5", addr).await;
                let mut burst = Vec::new();
                for i in 0..PER_CONNECTION {
                    burst.extend(bin_request(
                        0x21,
                        b"PLAIN",
                        &[],
                        b"\0victim\0guess",
                        i as u32,
                        0,
                    ));
                }
                c.send(&burst).await;
                for _ in 0..PER_CONNECTION {
                    let reply = c.read_bin().await;
                    assert_eq!(
                        (reply.status, reply.value.as_slice()),
                        (0x20, THROTTLED_BODY)
                    );
                }
            })
        })
        .collect();
    // Meanwhile another cache's first login (a hash of its own) and a
    // returning one, from another address.
    let login = async {
        let t = Instant::now();
        let mut c = connect_from("127.0.0.3", addr).await;
        assert_eq!(c.sasl_login("other", "other-pw").await, 0);
        let mut c = connect_from("127.0.0.3", addr).await;
        assert_eq!(c.sasl_login("other", "other-pw").await, 0);
        t.elapsed()
    };
    let took = login.await;
    for flood in floods {
        flood.await.unwrap();
    }
    let flood = t.elapsed();
    // 100 hashed attempts would take 100 hashes; unhashed, the whole flood
    // takes less than the two hashes the other login may need.
    assert!(
        flood < 3 * hash,
        "100 refusals took {flood:?}; one hash takes {hash:?}"
    );
    assert!(
        took < 3 * hash,
        "the other login took {took:?}; one hash {hash:?}"
    );
    assert_eq!(
        throttled(&node, "username").await,
        before + 4 * PER_CONNECTION as u64
    );
}

#[tokio::test]
async fn memcached_y_logins_do_not_throttle_themselves() {
    let node = start_node(Some(&two_caches()), false, |_| {}).await;
    // More -Y logins than free failures, all from one address: the key is
    // no username, and must not count as a failed attempt.
    for _ in 0..=2 * throttle::FREE_FAILURES {
        let mut c = connect(node.plain.unwrap()).await;
        c.expect(b"set anykey 0 0 14\r\nbob bob secret\r\n", b"STORED\r\n")
            .await;
    }
}

#[tokio::test]
async fn returning_hashed_logins_are_cached_until_the_credentials_change() {
    let phc = auth::hash_password("first-pw").unwrap();
    let caches = format!(
        "[[cache]]\nid = \"h\"\nmemory_limit = \"1MiB\"\n\
         [[cache.credential]]\nusername = \"hashed\"\npassword_hash = \"{phc}\"\nprimary = true\n"
    );
    let node = start_node(Some(&caches), false, |_| {}).await;
    let addr = node.plain.unwrap();
    let login = |password: &'static str| async move {
        let mut c = connect(addr).await;
        c.sasl_login("hashed", password).await
    };
    let t = Instant::now();
    assert_eq!(login("first-pw").await, 0);
    let first = t.elapsed();
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(login("first-pw").await, 0);
    }
    let twenty = t.elapsed();
    assert!(
        twenty < first,
        "20 returning logins took {twenty:?}, one argon2 login {first:?}"
    );
    assert_eq!(login("wrong").await, 0x20);

    // Rotate through the admin path: the cached password stops working.
    let new_phc = auth::hash_password("second-pw").unwrap();
    node.shared
        .update_credentials("h", |cache| {
            let mut creds = cache.credentials.clone();
            creds[0].secret = Secret::from_hash(&new_phc).map_err(|e| e.to_string())?;
            Ok(creds)
        })
        .unwrap();
    assert_eq!(login("first-pw").await, 0x20);
    assert_eq!(login("second-pw").await, 0);

    // And through a reload of the file (SIGHUP).
    let path = node.caches_path.as_ref().unwrap();
    std::fs::write(path, &caches).unwrap();
    node.shared.reload().unwrap();
    assert_eq!(login("second-pw").await, 0x20);
    assert_eq!(login("first-pw").await, 0);
}

/// A login that needs a password hash is checked off the async workers: on
/// this test's one-thread runtime, where the node runs too, other clients
/// log in and work while a deliberately slow hash runs.
#[tokio::test]
async fn a_slow_hash_does_not_stall_other_logins() {
    // 32 passes instead of 2: far slower than the logins below.
    let params = Params::new(auth::ARGON2_M_COST, 32, 1, None).unwrap();
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(b"slow-pw", &salt)
        .unwrap()
        .to_string();
    let slow = hashed_credential("slow", &phc, &["primary = true"]);
    let caches = two_caches() + &cache("slow", "1MiB", &[], &[slow]);
    let node = start_node(Some(&caches), false, |_| {}).await;
    let addr = node.plain.unwrap();
    let slow = tokio::spawn(async move {
        let mut c = connect(addr).await;
        c.sasl_login("slow", "slow-pw").await
    });
    // Let the slow login reach the node and start hashing.
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 0..10u32 {
        let mut c = connect(addr).await;
        assert_eq!(c.sasl_login("bob", "bob secret").await, 0);
        c.send(&bin_request(0x00, b"k", &[], &[], i, 0)).await;
        assert_eq!(c.read_bin().await.status, 0x01);
        let mut text = connect(addr).await;
        text.expect(b"set bob 0 0 10\r\nbob secret\r\n", b"STORED\r\n")
            .await;
    }
    assert!(
        !slow.is_finished(),
        "the slow login finished first: its hash held the node's worker"
    );
    assert_eq!(slow.await.unwrap(), 0);
}
