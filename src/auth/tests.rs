use super::*;
use std::time::Instant;

#[test]
fn plain_verifies_in_constant_time_form() {
    let s = Secret::Plain("hunter2".into());
    assert!(verify(&s, b"hunter2"));
    assert!(!verify(&s, b"hunter3"));
    assert!(!verify(&s, b"hunter"));
    assert!(!verify(&s, b"hunter22"));
    assert!(!verify(&s, b""));
    assert!(verify(&Secret::Plain(String::new()), b""));
}

#[test]
fn argon2id_round_trip_and_timing() {
    let phc = hash_password("correct horse").unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    let s = Secret::from_hash(&phc).unwrap();
    let t = Instant::now();
    assert!(verify(&s, b"correct horse"));
    let took = t.elapsed();
    assert!(!verify(&s, b"correct horse "));
    eprintln!("argon2id m=19456 t=2 p=1 verify: {took:?}");
    // Two hashes of the same password differ (random salt).
    assert_ne!(hash_password("correct horse").unwrap(), phc);
}

#[test]
fn argon2i_argon2d_and_scrypt_hashes_verify() {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let small = Params::new(64, 1, 1, None).unwrap();
    for (alg, want) in [
        (Algorithm::Argon2i, HashAlgorithm::Argon2i),
        (Algorithm::Argon2d, HashAlgorithm::Argon2d),
    ] {
        let phc = Argon2::new(alg, Version::V0x13, small.clone())
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        let s = Secret::from_hash(&phc).unwrap();
        assert!(matches!(&s, Secret::Hash(h) if h.algorithm() == want && h.as_str() == phc));
        assert!(verify(&s, b"pw"));
        assert!(!verify(&s, b"pW"));
    }
    let phc = scrypt::Scrypt
        .hash_password_customized(
            b"pw",
            None,
            None,
            scrypt::Params::new(4, 8, 1, 32).unwrap(),
            &salt,
        )
        .unwrap()
        .to_string();
    assert!(phc.starts_with("$scrypt$"), "{phc}");
    let s = Secret::from_hash(&phc).unwrap();
    assert!(verify(&s, b"pw"));
    assert!(!verify(&s, b"px"));
}

#[test]
fn malformed_hashes_are_rejected_at_load() {
    for bad in [
        "",
        "argon2id",
        "$argon2id$",
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
        "$argon2id$v=19$m=1,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=99$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$x=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$scrypt$ln=99,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
    ] {
        let e = Secret::from_hash(bad).unwrap_err();
        assert!(matches!(e, AuthError::MalformedHash { .. }), "{bad:?}: {e}");
    }
    let e =
        Secret::from_hash("$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA").unwrap_err();
    assert!(
        matches!(e, AuthError::UnsupportedAlgorithm { ref algorithm } if algorithm == "pbkdf2-sha256"),
        "{e}"
    );
}

#[test]
fn debug_redacts() {
    let p = Secret::Plain("hunter2".into());
    assert_eq!(format!("{p:?}"), "Secret::Plain([redacted])");
    let phc = hash_password("hunter2").unwrap();
    let h = Secret::from_hash(&phc).unwrap();
    let dbg = format!("{h:?}");
    assert!(!dbg.contains(&phc[20..]), "{dbg}");
    assert!(dbg.contains("argon2id"), "{dbg}");
    assert!(p.is_plain() && !h.is_plain());
}

/// A cheap argon2id hash, so the cache tests need not wait for OWASP's cost.
fn cheap_hash(password: &[u8]) -> Secret {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let phc = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(64, 1, 1, None).unwrap(),
    )
    .hash_password(password, &salt)
    .unwrap()
    .to_string();
    Secret::from_hash(&phc).unwrap()
}

#[test]
fn verified_slot_fills_on_the_first_success_only() {
    let stored = cheap_hash(b"pw");
    let slot = Verified::default();
    assert!(!verify_cached(&stored, b"u", &slot, b"wrong"));
    assert!(!slot.is_filled(), "wrong passwords are never cached");
    assert!(verify_cached(&stored, b"u", &slot, b"pw"));
    assert!(slot.is_filled());
    let tag = *slot.0.get().unwrap();
    // A hit: the same password verifies against the tag alone, which the
    // hash would not (it is a different password's hash).
    let other = cheap_hash(b"something else");
    let Secret::Hash(other_hash) = &other else {
        unreachable!()
    };
    let forged = Verified::default();
    let _ = forged.0.set(verified_tag(b"u", other_hash, b"pw"));
    assert!(verify_cached(&other, b"u", &forged, b"pw"));
    // Still refuses anything else, now without hashing, and stays as it
    // was.
    assert!(!verify_cached(&stored, b"u", &slot, b"pw "));
    assert!(!verify_cached(&stored, b"u", &slot, b""));
    assert_eq!(
        verify_cached_unhashed(&stored, b"u", &slot, b"wrong"),
        Some(false)
    );
    assert_eq!(
        verify_cached_unhashed(&stored, b"u", &slot, b"pw"),
        Some(true)
    );
    let empty = Verified::default();
    assert_eq!(verify_cached_unhashed(&stored, b"u", &empty, b"pw"), None);
    assert_eq!(*slot.0.get().unwrap(), tag);
    // The tag is bound to the username and to the stored hash.
    let Secret::Hash(hash) = &stored else {
        unreachable!()
    };
    assert_ne!(verified_tag(b"v", hash, b"pw"), tag);
    assert_ne!(verified_tag(b"u", other_hash, b"pw"), tag);
    // Plain secrets do not use the slot.
    let plain = Verified::default();
    assert!(verify_cached(
        &Secret::Plain("pw".into()),
        b"u",
        &plain,
        b"pw"
    ));
    assert!(!plain.is_filled());
}

#[test]
fn verified_slot_holds_no_plaintext() {
    let password = b"correct horse battery staple";
    let stored = cheap_hash(password);
    let slot = Verified::default();
    assert!(verify_cached(&stored, b"user", &slot, password));
    let tag = slot.0.get().unwrap();
    assert_eq!(tag.len(), 32, "a fixed-size MAC, whatever the password");
    for window in [&password[..], b"correct", b"horse", b"staple"] {
        assert!(!tag.windows(window.len()).any(|w| w == window));
    }
    // Not an unkeyed digest of the password either: it depends on the
    // per-process key, which never leaves the process.
    assert_ne!(
        &tag[..],
        ring::digest::digest(&ring::digest::SHA256, password).as_ref()
    );
    assert_ne!(tag, &keyed_digest(password));
    assert_eq!(format!("{slot:?}"), "Verified(filled, [redacted])");
}

mod throttle {
    use super::super::throttle::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    /// One checked attempt from `peer` as `user` that failed at `now`.
    fn fail(t: &Arc<Throttle>, peer: IpAddr, user: &[u8], now: Instant) {
        t.admit(peer, &[user], now).expect("admitted").failed(now);
    }

    fn refused(t: &Arc<Throttle>, peer: IpAddr, user: &[u8], now: Instant) -> Throttled {
        t.admit(peer, &[user], now).expect_err("refused")
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_a_success_resets() {
        let t = Arc::new(Throttle::default());
        let mut now = Instant::now();
        for _ in 1..FREE_FAILURES {
            fail(&t, A, b"u", now);
        }
        assert!(t.address_blocked(A, now).is_none(), "free failures");
        let mut want = BASE_DELAY;
        for _ in 0..10 {
            fail(&t, A, b"u", now);
            let blocked = refused(&t, A, b"u", now);
            assert_eq!((blocked.reason, blocked.remaining), (Reason::Address, want));
            assert_eq!(t.address_blocked(A, now), Some(want));
            // The username is blocked too, from any address.
            let by_name = refused(&t, B, b"u", now);
            assert_eq!(
                (by_name.reason, by_name.remaining),
                (Reason::Username, want)
            );
            // Others go on (and that attempt, abandoned, leaves no trace).
            drop(t.admit(B, &[b"v"], now).expect("others go on"));
            // A refusal is no failure: the block ends when it said.
            let just_before = now + want - Duration::from_millis(1);
            assert_eq!(
                refused(&t, A, b"u", just_before).remaining,
                Duration::from_millis(1)
            );
            now += want;
            assert!(t.address_blocked(A, now).is_none());
            want = (want * 2).min(MAX_DELAY);
        }
        assert_eq!(want, MAX_DELAY);
        // The right password, once the block is over, resets both keys.
        t.admit(A, &[b"u"], now).unwrap().succeeded(b"u");
        for _ in 1..FREE_FAILURES {
            fail(&t, A, b"u", now);
        }
        assert!(t.admit(A, &[b"u"], now).is_ok(), "free failures again");
    }

    #[test]
    fn after_a_block_one_attempt_at_a_time_is_checked() {
        let t = Arc::new(Throttle::default());
        let now = Instant::now();
        // Four connections at once, as a flood: all admitted while the key
        // is fresh, but once the free failures are spent the ones still
        // waiting for a hasher are refused before they hash.
        let waiting: Vec<Admission> = (0..4).map(|_| t.admit(A, &[b"u"], now).unwrap()).collect();
        let mut waiting = waiting.into_iter();
        for admission in waiting.by_ref().take(FREE_FAILURES as usize) {
            assert!(admission.still_admitted(now).is_ok());
            admission.failed(now);
        }
        let late = waiting.next().unwrap();
        assert_eq!(
            late.still_admitted(now).unwrap_err().reason,
            Reason::Address
        );
        drop(late);
        // The block over, one attempt is let through; the others are
        // refused until it is decided.
        let later = now + BASE_DELAY;
        let probe = t.admit(A, &[b"u"], later).unwrap();
        assert_eq!(refused(&t, A, b"u", later).remaining, BASE_DELAY);
        assert_eq!(t.address_blocked(A, later), Some(BASE_DELAY));
        // Abandoned (its client left), it frees the turn.
        drop(probe);
        let probe = t.admit(A, &[b"u"], later).unwrap();
        probe.failed(later);
        assert_eq!(refused(&t, A, b"u", later).remaining, 2 * BASE_DELAY);
        // A success on the next turn resets the key for everyone.
        let after = later + 2 * BASE_DELAY;
        t.admit(A, &[b"u"], after).unwrap().succeeded(b"u");
        let many: Vec<Admission> = (0..8)
            .map(|_| t.admit(A, &[b"u"], after).unwrap())
            .collect();
        assert_eq!(many.len(), 8, "a fresh key has no turns");
    }

    #[test]
    fn a_success_releases_the_other_reading_of_an_ascii_login() {
        let t = Arc::new(Throttle::default());
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            fail(&t, B, b"key", now);
        }
        let later = now + BASE_DELAY;
        // The -Y login's two readings: the key as a username, and the user
        // in the value. It logs in as the second.
        t.admit(A, &[b"key", b"user"], later)
            .unwrap()
            .succeeded(b"user");
        // The first reading's turn is free again.
        assert!(t.admit(B, &[b"key"], later).is_ok());
    }

    #[test]
    fn failures_are_forgotten() {
        let t = Arc::new(Throttle::default());
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            fail(&t, A, b"u", now);
        }
        assert!(t.admit(A, &[b"u"], now).is_err());
        let later = now + FORGET_AFTER;
        for _ in 1..FREE_FAILURES {
            fail(&t, A, b"u", later);
        }
        assert!(t.admit(A, &[b"u"], later).is_ok(), "counts from zero");
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_ipv4_as_ipv4() {
        let t = Arc::new(Throttle::default());
        let now = Instant::now();
        let host = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last));
        for i in 0..FREE_FAILURES as u16 {
            fail(&t, host(i), b"x", now);
        }
        let other_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert!(t.admit(host(999), &[b"y"], now).is_err());
        assert!(t.admit(other_64, &[b"y"], now).is_ok());
        for _ in 0..FREE_FAILURES {
            fail(&t, A, b"z", now);
        }
        let mapped = match A {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            IpAddr::V6(_) => unreachable!(),
        };
        assert_eq!(refused(&t, mapped, b"w", now).reason, Reason::Address);
    }

    #[test]
    fn tables_stay_bounded_when_keys_cycle() {
        let capacity = 64;
        let t = Arc::new(Throttle::new(capacity));
        let start = Instant::now();
        for i in 0..10_000u32 {
            let peer = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let name = i.to_le_bytes();
            fail(&t, peer, &name, start + Duration::from_millis(u64::from(i)));
            let (addresses, usernames) = t.keys_held();
            assert!(addresses <= capacity && usernames <= capacity, "{i}");
        }
        // The newest keys are the ones kept: a fresh flood from one address
        // is still caught.
        let now = start + Duration::from_secs(10);
        for _ in 0..FREE_FAILURES {
            fail(&t, A, b"u", now);
        }
        assert!(t.admit(A, &[b"u"], now).is_err());
    }
}
