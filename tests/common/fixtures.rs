//! The caches files the tests' nodes load, all written with one builder:
//! [`cache`] and [`credential`] are the only places that spell the file's
//! layout (`src/node/caches/file.rs` documents it). The benchmark scripts
//! have their own one home for it, `benches/lib.sh`.

use std::path::{Path, PathBuf};

/// A `[[cache]]` with `credentials` (from [`credential`]); `options` are
/// more `key = value` lines of the cache (`disabled = true`, say).
pub fn cache(id: &str, memory_limit: &str, options: &[&str], credentials: &[String]) -> String {
    let mut toml = format!("\n[[cache]]\nid = \"{id}\"\nmemory_limit = \"{memory_limit}\"\n");
    for option in options {
        toml.push_str(&format!("{option}\n"));
    }
    toml.extend(credentials.iter().map(String::as_str));
    toml
}

/// A `[[cache.credential]]` with a plain `password`; `options` are more
/// `key = value` lines (`primary = true`, `write = false`, `flush = false`,
/// `api = false`).
pub fn credential(username: &str, password: &str, options: &[&str]) -> String {
    credential_with(username, "password", password, options)
}

/// A `[[cache.credential]]` with a `password_hash` (a PHC string).
pub fn hashed_credential(username: &str, phc: &str, options: &[&str]) -> String {
    credential_with(username, "password_hash", phc, options)
}

fn credential_with(username: &str, secret_key: &str, secret: &str, options: &[&str]) -> String {
    let mut toml =
        format!("\n[[cache.credential]]\nusername = \"{username}\"\n{secret_key} = \"{secret}\"\n");
    for option in options {
        toml.push_str(&format!("{option}\n"));
    }
    toml
}

/// The caches file most node tests use: cache 1561 (alice, primary, and
/// reader, who may neither write nor flush), cache 2000 (bob, whose password
/// has a space) and cache 3000, disabled (carol).
pub fn two_caches() -> String {
    [
        cache(
            "1561",
            "8MiB",
            &[],
            &[
                credential("alice", "alice-secret", &["primary = true"]),
                credential(
                    "reader",
                    "reader-secret",
                    &["write = false", "flush = false"],
                ),
            ],
        ),
        cache(
            "2000",
            "8MiB",
            &[],
            &[credential("bob", "bob secret", &["primary = true"])],
        ),
        cache(
            "3000",
            "1MiB",
            &["disabled = true"],
            &[credential("carol", "carol-secret", &["primary = true"])],
        ),
    ]
    .concat()
}

pub const PROXY_USER: &str = "15F38e";
pub const PROXY_PASS: &str = "0c3a1b2d4e5f";

/// The caches file the proxy tests' nodes share: cache 42, whose one
/// credential is PROXY_USER / PROXY_PASS.
pub fn proxy_cache() -> String {
    cache(
        "42",
        "16MiB",
        &[],
        &[credential(PROXY_USER, PROXY_PASS, &["primary = true"])],
    )
}

/// Write the caches file `toml` as `dir/name`; its path.
pub fn write_caches(dir: &Path, name: &str, toml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml).unwrap();
    path
}
