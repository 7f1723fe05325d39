#!/usr/bin/env bash
# Login cost of the node with hashed (argon2id) credentials.
#
#   benches/login.sh            # needs target/release/memgate and
#                               # target/release/examples/login_bench:
#   cargo build --release --bin memgate --example login_bench
#
# The node runs as its own process on core $NODE_CPU, the load generator on
# $LOAD_CPU. Its CPU is utime+stime from /proc/PID/stat, over each phase.
#   a. returning clients: connect, SASL PLAIN, one get, close;
#   b. a wrong-password flood from 127.0.0.2 alone, then the same flood
#      while another tenant's returning clients log in from 127.0.0.3.
set -euo pipefail
cd "$(dirname "$0")/.."
NODE_CPU=${NODE_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SECONDS_PER_PHASE=${SECONDS_PER_PHASE:-10}
PORT=${PORT:-21311}
bin=target/release/memgate
load=target/release/examples/login_bench
dir=$(mktemp -d)
trap 'kill $node_pid 2>/dev/null || true; rm -rf "$dir"' EXIT

hash() { printf '%s' "$1" | "$bin" node hash-password; }
cat >"$dir/caches.toml" <<TOML
[[cache]]
id = "app"
memory_limit = "8MiB"
[[cache.credential]]
username = "app"
password_hash = "$(hash app-password)"
primary = true

[[cache]]
id = "victim"
memory_limit = "8MiB"
[[cache.credential]]
username = "victim"
password_hash = "$(hash victim-password)"
primary = true
TOML

taskset -c "$NODE_CPU" "$bin" node --listen "127.0.0.1:$PORT" --caches "$dir/caches.toml" \
    >"$dir/node.log" 2>&1 &
node_pid=$!
sleep 1
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$node_pid/stat"; }
# run NAME CMD...: the command's output, and the node's CPU over it (% of a core).
run() {
    local name=$1; shift
    local t0 c0 t1 c1 out
    t0=$(date +%s.%N); c0=$(cpu_ticks)
    out=$("$@")
    t1=$(date +%s.%N); c1=$(cpu_ticks)
    echo "$name: $out node_cpu=$(echo "scale=1; 100 * ($c1 - $c0) / $tck / ($t1 - $t0)" | bc)%"
}
L() { taskset -c "$LOAD_CPU" "$load" "127.0.0.1:$PORT" "$@" --seconds "$SECONDS_PER_PHASE"; }

# Warm the cache: the first login of each credential hashes.
L app app-password --connections 1 >/dev/null
run "a. returning logins (4 connections)" L app app-password --connections 4 --source 127.0.0.3
run "b1. wrong-password flood alone (32 connections, 127.0.0.2)" \
    L victim wrong --connections 32 --source 127.0.0.2
flood_and_logins() {
    L victim wrong --connections 32 --source 127.0.0.2 >"$dir/flood.out" &
    L app app-password --connections 1 --source 127.0.0.3
    wait
    echo "(flood: $(cat "$dir/flood.out"))"
}
run "b2. flood + another tenant's logins (1 connection, 127.0.0.3)" flood_and_logins
run "b3. that tenant's logins alone (1 connection, 127.0.0.3)" \
    L app app-password --connections 1 --source 127.0.0.3
