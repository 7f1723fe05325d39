# Shared by the benchmark scripts (sourced, not run): the one home of their
# fixtures. The Rust tests' counterpart is tests/common/fixtures.rs.

# cache_toml ID MEMORY_LIMIT USERNAME SECRET_KEY SECRET: one [[cache]] of a
# node's caches file (src/node/caches/file.rs), with one primary credential
# whose SECRET_KEY is `password` (plain) or `password_hash` (a PHC string,
# from `memgate node hash-password`). Caches are separated by a blank line.
cache_toml() {
  printf '\n[[cache]]\nid = "%s"\nmemory_limit = "%s"\n[[cache.credential]]\nusername = "%s"\n%s = "%s"\nprimary = true\n' "$@"
}

# free_port: a TCP port on 127.0.0.1 that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT [SECONDS]: until something listens there (5 s at most,
# or SECONDS: a server under valgrind takes longer).
wait_port() {
  for _ in $(seq $((${2:-5} * 20))); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "$(basename "$0"): port $1 never opened" >&2; exit 1
}

# bg COMMAND...: start it in the background, remembered in $pids for the
# caller's cleanup, its stderr in $work/servers.log; sets $pid.
bg() { "$@" >/dev/null 2>>"$work/servers.log" & pid=$!; pids+=("$pid"); }

# release_memgate [PATH]: PATH if given, else the repository's release build
# (built now); the repository is $repo.
release_memgate() {
  if [ -n "${1:-}" ]; then echo "$1"; return; fi
  (cd "$repo" && cargo build --release --quiet)
  echo "$repo/target/release/memgate"
}

# cleanup: stop every process `bg` started (continued first, if stopped) and
# remove $work; for `trap cleanup EXIT`.
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# memcaslap_mix FILE: memcaslap's configuration for the node's CPU
# benchmarks: 16-byte keys, 100-byte values, 90% get / 10% set.
memcaslap_mix() {
  printf 'key\n16 16 1\nvalue\n100 100 1\ncmd\n0 0.1\n1 0.9\n' > "$1"
}
