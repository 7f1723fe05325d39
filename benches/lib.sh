# Shared by the benchmark scripts (sourced, not run): the one home of their
# fixtures. The Rust tests' counterpart is tests/common/fixtures.rs.

# cache_toml ID MEMORY_LIMIT USERNAME SECRET_KEY SECRET: one [[cache]] of a
# node's caches file (src/node/caches/file.rs), with one primary credential
# whose SECRET_KEY is `password` (plain) or `password_hash` (a PHC string,
# from `memgate node hash-password`). Caches are separated by a blank line.
cache_toml() {
  printf '\n[[cache]]\nid = "%s"\nmemory_limit = "%s"\n[[cache.credential]]\nusername = "%s"\n%s = "%s"\nprimary = true\n' "$@"
}
