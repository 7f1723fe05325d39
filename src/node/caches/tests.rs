use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::file::UNNAMED;
use super::*;
use crate::auth::{self, Secret};

const EXAMPLE: &str = r#"
[[cache]]
id = "1561"
memory_limit = "64MiB"   # this node's share of the cache
disabled = false

[[cache.credential]]
username = "15F38e"
password = "s3cret"
primary = true
write = true
flush = true
api = true

[[cache.credential]]
username = "readonly"
password = "ro-pass"
write = false
flush = false
api = false

[[cache]]
id = "77"
memory_limit = 1048576

[[cache.credential]]
username = "other"
password = "other-pass"
"#;

fn err(text: &str) -> Invalid {
    match CachesFile::parse(text) {
        Err(CachesError::Invalid { reason, file }) => {
            assert_eq!(file, UNNAMED);
            reason
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn one(cred: &str) -> String {
    format!("[[cache]]\nid = \"c\"\nmemory_limit = \"1MiB\"\n[[cache.credential]]\n{cred}\n")
}

#[test]
fn parses_the_example() {
    let f = CachesFile::parse(EXAMPLE).unwrap();
    assert_eq!(f.caches.len(), 2);
    let c = &f.caches[0];
    assert_eq!(
        (c.id.as_str(), c.memory_limit, c.disabled),
        ("1561", 64 << 20, false)
    );
    assert_eq!(c.credentials.len(), 2);
    let p = &c.credentials[0];
    assert_eq!(p.username, "15F38e");
    assert_eq!(p.secret, Secret::Plain("s3cret".into()));
    assert!(p.primary);
    assert_eq!(p.caps, Capabilities::ALL);
    let ro = &c.credentials[1];
    assert!(!ro.primary);
    assert_eq!(
        ro.caps,
        Capabilities {
            write: false,
            flush: false,
            api: false
        }
    );
    assert_eq!(c.primary().unwrap().username, "15F38e");
    assert_eq!(f.caches[1].memory_limit, 1 << 20);
    assert_eq!(f.plain_password_count(), 3);
    assert_eq!(f.cache("77").unwrap().id, "77");
    assert!(f.cache("nope").is_none());
}

#[test]
fn defaults() {
    let f = CachesFile::parse(&one("username = \"u\"\npassword = \"p\"")).unwrap();
    let c = &f.caches[0];
    assert!(!c.disabled);
    let cred = &c.credentials[0];
    assert_eq!(cred.caps, Capabilities::ALL);
    // The only (first) credential becomes primary when none is marked.
    assert!(cred.primary);
    // A cache without credentials, and an empty file, are fine.
    let f = CachesFile::parse("[[cache]]\nid = \"x\"\nmemory_limit = 1\n").unwrap();
    assert!(f.caches[0].credentials.is_empty() && f.caches[0].primary().is_none());
    assert_eq!(CachesFile::parse("").unwrap(), CachesFile::default());
}

#[test]
fn first_is_primary_when_none_marked_otherwise_the_marked_one() {
    let text = "[[cache]]\nid = \"c\"\nmemory_limit = 1\n\
        [[cache.credential]]\nusername = \"a\"\npassword = \"p\"\n\
        [[cache.credential]]\nusername = \"b\"\npassword = \"p\"\n";
    let f = CachesFile::parse(text).unwrap();
    assert_eq!(f.caches[0].primary().unwrap().username, "a");
    let f = CachesFile::parse(&format!("{text}primary = true\n")).unwrap();
    assert_eq!(f.caches[0].primary().unwrap().username, "b");
    assert!(!f.caches[0].credentials[0].primary);
}

#[test]
fn hashed_passwords_load_and_bad_ones_fail() {
    let phc = auth::hash_password("pw").unwrap();
    let f = CachesFile::parse(&one(&format!(
        "username = \"u\"\npassword_hash = \"{phc}\""
    )))
    .unwrap();
    assert!(matches!(&f.caches[0].credentials[0].secret, Secret::Hash(h) if h.as_str() == phc));
    assert_eq!(f.plain_password_count(), 0);
    let e = err(&one("username = \"u\"\npassword_hash = \"$argon2id$nope\""));
    assert!(
        matches!(e, Invalid::BadHash { ref username, .. } if username == "u"),
        "{e}"
    );
}

#[test]
fn every_validation_error() {
    let e = err("[[cache]]\nid = \"\"\nmemory_limit = 1\n");
    assert!(matches!(e, Invalid::EmptyCacheId { index: 1 }), "{e}");
    let e = err("[[cache]]\nid = \"a b\"\nmemory_limit = 1\n");
    assert!(matches!(e, Invalid::BadCacheId { .. }), "{e}");
    let e =
        err("[[cache]]\nid = \"a\"\nmemory_limit = 1\n[[cache]]\nid = \"a\"\nmemory_limit = 1\n");
    assert!(
        matches!(e, Invalid::DuplicateCacheId { ref id } if id == "a"),
        "{e}"
    );
    let e = err("[[cache]]\nid = \"a\"\nmemory_limit = \"0MiB\"\n");
    assert!(
        matches!(e, Invalid::ZeroMemoryLimit { ref cache } if cache == "a"),
        "{e}"
    );
    let e = err(&one("username = \"\"\npassword = \"p\""));
    assert!(matches!(e, Invalid::EmptyUsername { index: 1, .. }), "{e}");
    for bad in ["a b", "a\\tb", "a\\u0001", &"x".repeat(251)] {
        let e = err(&one(&format!("username = \"{bad}\"\npassword = \"p\"")));
        assert!(matches!(e, Invalid::BadUsername { .. }), "{bad}: {e}");
    }
    let e = err(&one(
        "username = \"u\"\npassword = \"p\"\npassword_hash = \"$argon2id$x\"",
    ));
    assert!(matches!(e, Invalid::PasswordAndHash { .. }), "{e}");
    let e = err(&one("username = \"u\""));
    assert!(matches!(e, Invalid::NoPassword { .. }), "{e}");
    let e = err(&one("username = \"u\"\npassword = \"\""));
    assert!(matches!(e, Invalid::EmptyPassword { .. }), "{e}");
    let two = "[[cache]]\nid = \"c\"\nmemory_limit = 1\n\
        [[cache.credential]]\nusername = \"a\"\npassword = \"p\"\nprimary = true\n\
        [[cache.credential]]\nusername = \"b\"\npassword = \"p\"\nprimary = true\n";
    let e = err(two);
    assert!(
        matches!(e, Invalid::MultiplePrimaries { ref usernames, .. } if usernames == "a, b"),
        "{e}"
    );
    // Duplicate username in the same cache, and across caches.
    let e = err(&two
        .replace("\"b\"", "\"a\"")
        .replace("primary = true\n", ""));
    assert!(matches!(e, Invalid::DuplicateUsername { .. }), "{e}");
    let e = err(&format!(
        "{}[[cache]]\nid = \"d\"\nmemory_limit = 1\n[[cache.credential]]\nusername = \"u\"\npassword = \"q\"\n",
        one("username = \"u\"\npassword = \"p\"")
    ));
    assert!(
        matches!(e, Invalid::DuplicateUsername { ref first, ref second, .. } if first == "c" && second == "d"),
        "{e}"
    );
    let mut f = CachesFile::parse(&one("username = \"u\"\npassword = \"p\"")).unwrap();
    f.caches[0].credentials[0].primary = false;
    assert!(matches!(f.validate(), Err(Invalid::NoPrimary { .. })));
}

#[test]
fn toml_shape_errors() {
    for bad in [
        "[[cache]]\nmemory_limit = 1\n",                        // no id
        "[[cache]]\nid = \"a\"\n",                              // no memory_limit
        "[[cache]]\nid = \"a\"\nmemory_limit = \"64XB\"\n",     // bad size
        "[[cache]]\nid = \"a\"\nmemory_limit = 1\nlimit = 2\n", // unknown key
        "[[cache]]\nid = \"a\"\nmemory_limit = -1\n",
        "not toml at all",
    ] {
        assert!(
            matches!(CachesFile::parse(bad), Err(CachesError::Toml { .. })),
            "{bad}"
        );
    }
    let e = CachesFile::parse(&one("username = \"u\"\npasword = \"p\"")).unwrap_err();
    assert!(e.to_string().contains("pasword"), "{e}");
}

#[test]
fn errors_name_the_file_and_never_the_password() {
    let dir = tempdir();
    let path = dir.join("caches.toml");
    fs::write(
        &path,
        one("username = \"u\"\npassword = \"topsecret\"\npassword_hash = \"x\""),
    )
    .unwrap();
    let e = CachesFile::load(&path).unwrap_err().to_string();
    assert!(
        e.contains(&path.display().to_string()) && e.contains("\"u\"") && e.contains("\"c\""),
        "{e}"
    );
    assert!(!e.contains("topsecret"), "{e}");
    let e = CachesFile::load(dir.join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml"), "{e}");
    // Debug output of a loaded file does not show passwords either.
    let f = CachesFile::parse(EXAMPLE).unwrap();
    let dbg = format!("{f:?}");
    assert!(!dbg.contains("s3cret") && !dbg.contains("ro-pass"), "{dbg}");
    fs::remove_dir_all(dir).unwrap();
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "memgate-caches-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn save_atomic_round_trips_losslessly() {
    let phc = auth::hash_password("pw").unwrap();
    let text = format!(
        "{EXAMPLE}\n[[cache]]\nid = \"h\"\nmemory_limit = 1000\ndisabled = true\n\
         [[cache.credential]]\nusername = \"hashed\"\npassword_hash = \"{phc}\"\nflush = false\n"
    );
    let f = CachesFile::parse(&text).unwrap();
    let dir = tempdir();
    let path = dir.join("caches.toml");
    fs::write(&path, "old contents").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    f.save_atomic(&path).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let back = CachesFile::load(&path).unwrap();
    assert_eq!(back, f);
    let saved = fs::read_to_string(&path).unwrap();
    assert!(saved.contains("password = \"s3cret\""), "{saved}");
    assert!(saved.contains(&phc), "{saved}");
    assert!(saved.contains("memory_limit = \"64MiB\""), "{saved}");
    // Saving again is byte-identical, and no temporary files remain.
    back.save_atomic(&path).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), saved);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    // An invalid file is not written.
    let mut bad = back.clone();
    bad.caches[0].memory_limit = 0;
    assert!(matches!(
        bad.save_atomic(&path),
        Err(CachesError::Invalid { .. })
    ));
    assert_eq!(fs::read_to_string(&path).unwrap(), saved);
    fs::remove_dir_all(dir).unwrap();
}

/// Passwords may hold any printable characters, quotes included. A run of
/// 256 or more quotes overflowed the TOML writer's counter in toml 0.8 (the
/// caches_toml fuzz target found it): saving panicked with overflow checks
/// on.
#[test]
fn long_runs_of_quotes_round_trip() {
    for quote in ['\'', '"'] {
        let password: String = std::iter::repeat_n(quote, 300).collect();
        let text = format!(
            "[[cache]]\nid = \"q\"\nmemory_limit = 1000\n\
             [[cache.credential]]\nusername = \"u\"\npassword = {}\n",
            toml::Value::String(password.clone())
        );
        let f = CachesFile::parse(&text).unwrap();
        let saved = f.to_toml().unwrap();
        assert_eq!(CachesFile::parse(&saved).unwrap(), f, "{saved}");
        let d = Directory::new(f).unwrap();
        assert!(d.login(b"u", password.as_bytes()).is_ok());
    }
}

#[test]
fn login() {
    let phc = auth::hash_password("hashed-pw").unwrap();
    let text = format!(
        "{EXAMPLE}\n[[cache]]\nid = \"off\"\nmemory_limit = 1\ndisabled = true\n\
         [[cache.credential]]\nusername = \"disabled-user\"\npassword = \"pw\"\n\
         [[cache]]\nid = \"h\"\nmemory_limit = 1\n\
         [[cache.credential]]\nusername = \"hashed\"\npassword_hash = \"{phc}\"\n"
    );
    let d = Directory::new(CachesFile::parse(&text).unwrap()).unwrap();
    let ok = d.login(b"15F38e", b"s3cret").unwrap();
    assert_eq!(
        ok,
        LoginOk {
            cache_id: "1561".into(),
            cache_index: 0,
            username: "15F38e".into(),
            primary: true,
            caps: Capabilities::ALL
        }
    );
    let ro = d.login(b"readonly", b"ro-pass").unwrap();
    assert_eq!((ro.cache_id.as_str(), ro.primary), ("1561", false));
    assert_eq!(
        ro.caps,
        Capabilities {
            write: false,
            flush: false,
            api: false
        }
    );
    assert_eq!(d.login(b"other", b"other-pass").unwrap().cache_index, 1);
    let h = d.login(b"hashed", b"hashed-pw").unwrap();
    assert_eq!(h.cache_id, "h");

    // Every failure is the same error.
    assert_eq!(d.login(b"15F38e", b"wrong"), Err(LoginError::Failed));
    assert_eq!(d.login(b"15F38e", b"s3cret "), Err(LoginError::Failed));
    assert_eq!(d.login(b"15f38e", b"s3cret"), Err(LoginError::Failed)); // case-sensitive
    assert_eq!(d.login(b"nobody", b"s3cret"), Err(LoginError::Failed));
    assert_eq!(d.login(b"", b""), Err(LoginError::Failed));
    assert_eq!(d.login(b"disabled-user", b"pw"), Err(LoginError::Failed));
    assert_eq!(d.login(b"hashed", b"nope"), Err(LoginError::Failed));
    assert_eq!(d.login(b"\xff\xfe", b"x"), Err(LoginError::Failed));

    assert_eq!(d.cache_of_username(b"readonly"), Some(0));
    assert_eq!(d.cache_of_username(b"nobody"), None);
    assert_eq!(d.caches().len(), 4);
    // An empty directory refuses everyone.
    let empty = Directory::new(CachesFile::default()).unwrap();
    assert_eq!(empty.login(b"u", b"p"), Err(LoginError::Failed));
}

#[test]
fn unknown_user_costs_a_verification_too() {
    let phc = auth::hash_password("pw").unwrap();
    let d = Directory::new(
        CachesFile::parse(&one(&format!(
            "username = \"u\"\npassword_hash = \"{phc}\""
        )))
        .unwrap(),
    )
    .unwrap();
    let time = |u: &[u8]| {
        let t = std::time::Instant::now();
        assert_eq!(d.login(u, b"guess"), Err(LoginError::Failed));
        t.elapsed()
    };
    let known = time(b"u");
    let unknown = time(b"nobody");
    // An argon2 verification takes milliseconds, a bare lookup
    // microseconds: the unknown user must have paid for one too.
    assert!(
        unknown * 3 > known,
        "unknown {unknown:?} vs known {known:?}"
    );
}

#[test]
fn directory_refuses_an_invalid_file() {
    let mut f = CachesFile::parse(EXAMPLE).unwrap();
    f.caches[1].credentials[0].username = "15F38e".into();
    assert!(matches!(
        Directory::new(f),
        Err(Invalid::DuplicateUsername { .. })
    ));
}

/// The example file plus cache `h` (the third) with user `hashed`, whose
/// password is stored as an argon2 hash.
fn with_hashed(password: &str) -> CachesFile {
    let phc = auth::hash_password(password).unwrap();
    CachesFile::parse(&format!(
        "{EXAMPLE}\n[[cache]]\nid = \"h\"\nmemory_limit = 1\n\
         [[cache.credential]]\nusername = \"hashed\"\npassword_hash = \"{phc}\"\n"
    ))
    .unwrap()
}

#[test]
fn verified_secrets_are_cached_per_directory_and_dropped_with_it() {
    let file = with_hashed("hashed-pw");
    let d = Directory::new(file.clone()).unwrap();
    let slot = |d: &Directory| d.verified(b"hashed").unwrap().is_filled();
    assert!(!slot(&d));
    assert_eq!(d.login(b"hashed", b"wrong"), Err(LoginError::Failed));
    assert!(!slot(&d), "a wrong password is never cached");
    let t = std::time::Instant::now();
    assert!(d.login(b"hashed", b"hashed-pw").is_ok());
    let first = t.elapsed();
    assert!(slot(&d));
    let t = std::time::Instant::now();
    for _ in 0..100 {
        assert!(d.login(b"hashed", b"hashed-pw").is_ok());
    }
    let hundred_hits = t.elapsed();
    assert!(
        hundred_hits < first,
        "100 cached logins {hundred_hits:?} vs one argon2 verification {first:?}"
    );
    assert_eq!(d.login(b"hashed", b"hashed-pw "), Err(LoginError::Failed));
    // Plain secrets need no cache.
    assert!(d.login(b"15F38e", b"s3cret").is_ok());
    assert!(!d.verified(b"15F38e").unwrap().is_filled());

    // Any change builds a new directory, whose caches start empty; after a
    // rotation the old password fails.
    let mut rotated = file;
    let new_phc = auth::hash_password("new-pw").unwrap();
    let cred = &mut rotated.caches[2].credentials[0];
    cred.secret = Secret::from_hash(&new_phc).unwrap();
    let d2 = Directory::new(rotated).unwrap();
    assert!(!slot(&d2));
    assert_eq!(d2.login(b"hashed", b"hashed-pw"), Err(LoginError::Failed));
    assert!(d2.login(b"hashed", b"new-pw").is_ok());
}

/// A login flood from an app with an old password hashes it once: a repeat
/// of a refused attempt, and (once the right password filled the slot) any
/// wrong password, is refused without a hash. A new directory forgets.
#[test]
fn a_refused_attempt_is_not_hashed_again() {
    let file = with_hashed("right");
    let d = Directory::new(file.clone()).unwrap();
    assert_eq!(d.login_unhashed(b"hashed", b"old"), None, "needs a hash");
    assert_eq!(d.login(b"hashed", b"old"), Err(LoginError::Failed));
    assert_eq!(
        d.login_unhashed(b"hashed", b"old"),
        Some(Err(LoginError::Failed))
    );
    assert_eq!(d.login_unhashed(b"hashed", b"older"), None);
    // Unknown usernames too (their decoy is a hash).
    assert_eq!(d.login(b"nobody", b"x"), Err(LoginError::Failed));
    assert_eq!(
        d.login_unhashed(b"nobody", b"x"),
        Some(Err(LoginError::Failed))
    );
    // The right password was never refused, and once it filled the slot
    // every other is refused unhashed.
    assert!(d.login(b"hashed", b"right").is_ok());
    assert_eq!(
        d.login_unhashed(b"hashed", b"older"),
        Some(Err(LoginError::Failed))
    );
    assert!(d.login_unhashed(b"hashed", b"right").unwrap().is_ok());
    // After a rotation to the once-refused password, it logs in.
    let mut rotated = file;
    let cred = &mut rotated.caches[2].credentials[0];
    cred.secret = Secret::from_hash(&auth::hash_password("old").unwrap()).unwrap();
    let d2 = Directory::new(rotated).unwrap();
    assert!(d2.login(b"hashed", b"old").is_ok());
}

#[test]
fn a_disabled_caches_right_password_is_never_cached() {
    let phc = auth::hash_password("pw").unwrap();
    let d = Directory::new(
        CachesFile::parse(&format!(
            "[[cache]]\nid = \"off\"\nmemory_limit = 1\ndisabled = true\n\
             [[cache.credential]]\nusername = \"u\"\npassword_hash = \"{phc}\"\n"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(d.login(b"u", b"pw"), Err(LoginError::Failed));
    // A repeat fails unhashed, as a repeated wrong password does.
    assert_eq!(d.login_unhashed(b"u", b"pw"), Some(Err(LoginError::Failed)));
    assert!(d.verify(b"u", b"pw").is_ok());
    assert!(!d.verified(b"u").unwrap().is_filled());
}
