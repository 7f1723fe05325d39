#!/usr/bin/env bash
# Login cost of the node with hashed (argon2id) credentials; figures and how
# to read them in benches/LOGIN.md.
#
#   cargo build --release --bin memgate --example login_bench
#   benches/login.sh
#
# The node runs as its own process on core $NODE_CPU, the load generator
# (examples/login_bench.rs, one thread) on $LOAD_CPU. Every round is a new
# connection: connect, log in, one command whose reply is checked, close.
# The generator reads the node's CPU (utime+stime, /proc/PID/stat) over
# each phase:
#   a. returning clients, plain listener: SASL PLAIN + binary GET, then the
#      ASCII login + text get; then the TLS listener, resumed sessions and
#      full handshakes;
#   b. wrong-password floods for one user, from one address each, over
#      $FLOOD_CONNECTIONS connections as fast as the node answers: alone
#      (connections kept open; then a new connection per attempt), then
#      while another tenant logs in every 100 ms (its p99 and max), then
#      while that tenant's returning clients log in at full rate. Each flood
#      has its own address and user, so each starts unthrottled. These
#      repeat one wrong password, as an app deployed with an old one does;
#   c. the same two floods alone from a guesser: a new password every
#      attempt (--guess 1), each of which the node must hash.
#
# BIN=path runs another build of the node (main's, say) against the same
# generator.
#
# On a box shared with builds, both processes spend most of a round waiting
# to be scheduled, not computing: the rate is then the scheduler's, with
# both cores far from busy. So both run SCHED_FIFO (chrt -f 1; root needed)
# unless RT=0. That changes when they run, not what they cost, and the
# kernel's RT throttling keeps 5% of each core for everyone else.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
NODE_CPU=${NODE_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SECONDS_PER_PHASE=${SECONDS_PER_PHASE:-10}
CONNECTIONS=${CONNECTIONS:-64}
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-4}
RT=${RT:-1}
PORT=${PORT:-21311}
TLS_PORT=${TLS_PORT:-21319}
METRICS_PORT=${METRICS_PORT:-21312}
bin=${BIN:-target/release/memgate}
load=target/release/examples/login_bench
dir=$(mktemp -d)
trap 'kill $node_pid 2>/dev/null || true; rm -rf "$dir"' EXIT

hash() { printf '%s' "$1" | "$bin" node hash-password; }
{
  cache_toml app 8MiB app password_hash "$(hash app-password)"
  for i in 1 2 3 4 5 6 7; do
    cache_toml "victim$i" 1MiB "victim$i" password_hash "$(hash victim-password)"
  done
} >"$dir/caches.toml"
"$bin" certs --out "$dir/certs" --node localhost >/dev/null

rt=()
if [ "$RT" = 1 ]; then rt=(chrt -f 1); fi
"${rt[@]}" taskset -c "$NODE_CPU" "$bin" node --caches "$dir/caches.toml" \
    --listen "127.0.0.1:$PORT" --tls-listen "127.0.0.1:$TLS_PORT" \
    --cert "$dir/certs/localhost.crt" --key "$dir/certs/localhost.key" \
    --metrics-listen "127.0.0.1:$METRICS_PORT" >"$dir/node.log" 2>&1 &
node_pid=$!
sleep 1
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# node on CPU $NODE_CPU, generator on CPU $LOAD_CPU, ${rt[*]:-normal scheduling}, $SECONDS_PER_PHASE s per phase"
L() {
    local addr=$1; shift
    "${rt[@]}" taskset -c "$LOAD_CPU" "$load" "$addr" "$@" --seconds "$SECONDS_PER_PHASE" --node-pid "$node_pid"
}
plain="127.0.0.1:$PORT"
tls="127.0.0.1:$TLS_PORT"
ca="$dir/certs/ca.crt"
app() { L "$1" app app-password --connections "$CONNECTIONS" "${@:2}"; }
# flood N [--persistent 1]: wrong passwords for victimN from 127.0.0.(N+1).
flood() {
    L "$plain" "victim$1" wrong --source "127.0.0.$(($1 + 1))" \
        --connections "$FLOOD_CONNECTIONS" "${@:2}"
}
# paced: one of app's clients logging in every 100 ms, a new connection each.
paced() { app "$plain" --connections 1 --interval 100; }

echo "a1. returning logins, SASL PLAIN + GET, plain: $(app "$plain")"
echo "a2. returning logins, ASCII login + get, plain: $(app "$plain" --form ascii)"
echo "a3. returning logins, SASL PLAIN + GET, TLS (resumed): $(app "$tls" --tls "$ca")"
echo "a4. returning logins, SASL PLAIN + GET, TLS (full handshakes): $(app "$tls" --tls-full "$ca")"
echo "b1. flood alone, $FLOOD_CONNECTIONS connections kept open: $(flood 1 --persistent 1)"
echo "b2. flood alone, $FLOOD_CONNECTIONS connections, a new one per attempt: $(flood 2)"
flood 3 --persistent 1 >"$dir/flood.out" &
flood_pid=$!
echo "b3. app every 100 ms during a flood over open connections: $(paced)"
wait "$flood_pid"
echo "b3. the flood meanwhile: $(cat "$dir/flood.out")"
flood 4 >"$dir/flood.out" &
flood_pid=$!
echo "b4. app every 100 ms during a flood of new connections: $(paced)"
wait "$flood_pid"
echo "b4. the flood meanwhile: $(cat "$dir/flood.out")"
flood 5 --persistent 1 >"$dir/flood.out" &
flood_pid=$!
echo "b5. app's returning clients at full rate during a flood: $(app "$plain")"
wait "$flood_pid"
echo "b5. the flood meanwhile: $(cat "$dir/flood.out")"
echo "c1. guesser alone, $FLOOD_CONNECTIONS connections kept open: $(flood 6 --persistent 1 --guess 1)"
echo "c2. guesser alone, $FLOOD_CONNECTIONS connections, a new one per attempt: $(flood 7 --guess 1)"
echo "# throttle: $(curl -s "127.0.0.1:$METRICS_PORT/metrics" | grep '^memgate_node_auth_throttled_total' | tr '\n' ' ')"
