#!/usr/bin/env bash
# The sidecar's cost per proxied request, two builds side by side over the
# same three memgate nodes (TLS and login, as `memgate up` runs them): issue
# 21's "--replicas 1 and no reload in progress: CPU per request within 2% of
# today", for the warm-up check that every keyed request now makes.
#
#   1. callgrind: each build's sidecar under `valgrind --tool=callgrind`
#      (a fresh one per round, builds interleaved); a
#      warm-up bench (prefill and requests), `callgrind_control -d`, then one
#      measured bench per protocol, each followed by a dump, so that each
#      dump holds exactly that bench's instructions (NOTES.md, session 5's
#      method). Instructions per request = the dump's Ir / requests.
#   2. CPU: both sidecars (no valgrind) up at once; per round and protocol,
#      the same bench against each, utime + stime of the sidecar from
#      /proc/PID/stat before and after, over the requests answered.
# The sidecars and nodes run on --server-cpus, `memgate bench` on
# --load-cpus. Every bench must answer every request without an error, a
# timeout or a wrong value (--verify), or the script stops.
#
# Usage: benches/request_cost.sh --before PATH --after PATH [--requests N]
#          [--rounds R] [--callgrind-requests N] [--callgrind-rounds R]
#          [--server-cpus L] [--load-cpus L] [--keep DIR]
#          [--before-config LINE] [--after-config LINE] [--ratio SET:GET]
# --keep DIR keeps the callgrind files there, for callgrind_annotate.
# --before-config / --after-config add a line to that sidecar's config file
# (the same build twice with `replicas = 2` on one side measures what
# replication costs); --ratio sets the bench's set:get mix (default 1:10;
# 0:1 is gets only, 1:0 sets only).
# --after also runs the nodes. Figures: benches/NOTES.md. Needs python3 and
# valgrind.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
keep="" before="" after="" before_config="" after_config="" ratio=1:10 requests=220000 cg_requests=220000 rounds=3 cg_rounds=2 server_cpus=0 load_cpus=1
while [ $# -gt 0 ]; do
  case $1 in
    --before) before=$2; shift 2 ;;
    --after) after=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --callgrind-requests) cg_requests=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --callgrind-rounds) cg_rounds=$2; shift 2 ;;
    --server-cpus) server_cpus=$2; shift 2 ;;
    --load-cpus) load_cpus=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --before-config) before_config=$2; shift 2 ;;
    --after-config) after_config=$2; shift 2 ;;
    --ratio) ratio=$2; shift 2 ;;
    *) echo "usage: $0 --before PATH --after PATH [--requests N] [--rounds R] [--callgrind-requests N] [--callgrind-rounds R] [--server-cpus L] [--load-cpus L] [--keep DIR] [--before-config LINE] [--after-config LINE] [--ratio SET:GET]" >&2; exit 64 ;;
  esac
done
[ -n "$before" ] && [ -n "$after" ] || { echo "$0: --before and --after are required" >&2; exit 64; }
# shellcheck source=benches/lib.sh
source "$repo/benches/lib.sh"
work=$(mktemp -d)
pids=()
trap cleanup EXIT

"$after" certs --out "$work/pki" --node localhost >/dev/null
user=cost pass=cost-password-123
cache_toml cost 256MiB "$user" password "$pass" > "$work/caches.toml"
export MEMGATE_LOG=warn
servers=""
for i in 1 2 3; do
  port=$(free_port)
  bg taskset -c "$server_cpus" "$after" node --memory-limit 256MiB --listen none --tls-listen 127.0.0.1:"$port" \
    --caches "$work/caches.toml" --cert "$work/pki/localhost.crt" --key "$work/pki/localhost.key"
  wait_port "$port"
  servers+="${servers:+,}n$i=127.0.0.1:$port"
done

# sidecar_config NAME PORT BUILD: the sidecar's file, default settings but
# for BUILD's extra line.
sidecar_config() {
  local extra="${3}_config"
  cat > "$work/$1.toml" <<TOML
${!extra}
listen = "127.0.0.1:$2"
servers = "$servers"
ca = "$work/pki/ca.crt"
server_name = "localhost"
username = "$user"
password = "$pass"
metrics_listen = "none"
TOML
}

# bench PORT PROTOCOL REQUESTS [FLAGS...]: one pinned bench, JSON in $work/last.json;
# stops the script unless every request was answered right.
bench() {
  local port=$1 protocol=$2 n=$3; shift 3
  taskset -c "$load_cpus" "$after" bench --server 127.0.0.1:"$port" --protocol "$protocol" --requests "$n" \
    --pipeline 8 --connections 4 --ratio "$ratio" --key-space 10000 --value-size 100 --timeout 10s --json "$@" \
    > "$work/last.json" 2>>"$work/bench.log"
  python3 - "$work/last.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
bad = {k: d[k] for k in ("errors", "timeouts", "lost", "misses", "verify_failures", "reconnects") if d[k]}
if bad or d["ops"] != d["sent"]:
    sys.exit(f"bench replies not all right: {bad}, ops {d['ops']} of {d['sent']} sent")
PY
}
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/last.json" "$1"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)

echo "## callgrind: sidecar instructions per request ($cg_requests requests, $ratio set:get, 4 connections x pipeline 8)"
echo
echo "before: $before ${before_config:+($before_config)}; after: $after ${after_config:+($after_config)}"
echo
echo "| round | build | protocol | requests | sets | gets (hits) | Ir | Ir per request |"
echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"
for cg_round in $(seq "$cg_rounds"); do
for build in before after; do
  bin=${!build}
  port=$(free_port)
  out="$work/cg-$cg_round-$build.out"
  sidecar_config "cg-$build" "$port" "$build"
  bg taskset -c "$server_cpus" valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$out" \
    "$bin" proxy --config "$work/cg-$build.toml"
  vg=$pid
  for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
  bench "$port" text 20000 --prefill
  callgrind_control -d "$vg" >/dev/null 2>&1
  n=1
  for protocol in text meta; do
    bench "$port" "$protocol" "$cg_requests" --verify
    ops=$(field ops) sets=$(field sets) hits=$(field hits)
    callgrind_control -d "$vg" >/dev/null 2>&1
    n=$((n + 1))
    ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$out.$n")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$cg_round" "$build" "$protocol" "$ops" "$sets" "$hits" "$ir" "$((ir / ops))"
  done
  kill "$vg"; wait "$vg" 2>/dev/null || true
  if [ -n "$keep" ]; then mkdir -p "$keep" && cp "$out".* "$keep/"; fi
done
done

[ "$rounds" -gt 0 ] || exit 0
echo
echo "## CPU per request of the sidecar (µs, utime + stime; $requests requests a bench; $rounds rounds, builds interleaved)"
echo
declare -A port_of pid_of
for build in before after; do
  bin=${!build}
  port_of[$build]=$(free_port)
  sidecar_config "cpu-$build" "${port_of[$build]}" "$build"
  bg taskset -c "$server_cpus" "$bin" proxy --config "$work/cpu-$build.toml"
  pid_of[$build]=$pid
  wait_port "${port_of[$build]}"
  bench "${port_of[$build]}" text 20000 --prefill
done
: > "$work/cpu.tsv"
for round in $(seq "$rounds"); do
  for protocol in text meta; do
    for build in before after; do
      t0=$(cpu_ticks "${pid_of[$build]}")
      bench "${port_of[$build]}" "$protocol" "$requests" --verify
      t1=$(cpu_ticks "${pid_of[$build]}")
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$protocol" "$build" "$((t1 - t0))" "$(field ops)" \
        "$(field answered_per_sec)" >> "$work/cpu.tsv"
    done
  done
done
python3 - "$work/cpu.tsv" "$tck" <<'PY'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
tck = int(sys.argv[2])
cell = {}
for rnd, proto, build, ticks, ops, rate in rows:
    cell.setdefault((proto, build), []).append((int(ticks) * 1e6 / tck / int(ops), float(rate)))
print("| protocol | build | µs per request, each round | median | ops/s, each round | after ÷ before (median) |")
print("| --- | --- | --- | ---: | --- | ---: |")
for proto in ("text", "meta"):
    med = {b: statistics.median(c for c, _ in cell[(proto, b)]) for b in ("before", "after")}
    for build in ("before", "after"):
        runs = cell[(proto, build)]
        ratio = f"{med['after'] / med['before']:.3f}" if build == "after" else ""
        print(f"| {proto} | {build} | {', '.join(f'{c:.2f}' for c, _ in runs)} | {med[build]:.2f} "
              f"| {', '.join(f'{r:,.0f}' for _, r in runs)} | {ratio} |")
PY
