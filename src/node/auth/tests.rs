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
