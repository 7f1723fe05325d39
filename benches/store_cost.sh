#!/usr/bin/env bash
# What a request costs the node against memcached 1.6.18 (issue 22), two
# ways, each side by side in one run:
#
#   benches/store_cost.sh [--memgate PATH] [--requests N] [--rounds R]
#                         [--duration S] [--pipeline P] [--skip-callgrind]
#                         [--keep DIR] [--node-arg ARG]... [--protocol P]
#
# 1. Instructions (exact, repeatable): each server runs under callgrind;
#    after a prefill, the counters are zeroed (`callgrind_control -z`), a
#    fixed number of requests is sent, and the counters dumped
#    (`callgrind_control -d`): user-space instructions (Ir) per request,
#    the server's every thread included; --keep DIR keeps each dump there
#    (as <load>.<server>.callgrind) for callgrind_annotate. memcached runs as
#    `ulimit -n 1024; valgrind ... memcached -c 1012`: memcached sets its
#    open-file limits, soft and hard, to -c, and valgrind keeps 12 of the
#    1024 for itself.
# 2. CPU time, both servers pinned to CPU 0, the load on CPU 1: utime and
#    stime (/proc/PID/stat) over each run, per request, in interleaved
#    rounds (the order flips every round), medians.
#
# Loads (90% get / 10% set, 100-byte values, 16 connections):
#   memcaslap   memcaslap -T 2 -c 16, no pipelining (as benches/store_cpu.sh);
#   bench-pP    memgate bench --pipeline P over 10,000 prefilled keys: P
#               requests in flight per connection, so a read brings many
#               requests and user-space work weighs more than syscalls;
#               --protocol meta or binary speaks that dialect (the
#               sidecar speaks meta to memgate nodes).
# Requests are counted from the server's own stats (cmd_get + cmd_set),
# and every run must be real hits: the server's get_hits must have grown by
# its cmd_get, and the load must count no miss and no error, or the script
# stops. Both servers run at 1 GiB, so nothing is evicted. --node-arg
# passes an argument on to `memgate node` (`--node-arg --what-if
# --node-arg off`: without the what-if tracker, which memcached has no
# counterpart of).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/lib.sh
source "$repo/benches/lib.sh"
bin=$repo/target/release/memgate
requests=100000
rounds=5
duration=8
pipeline=16
protocol=text
callgrind=1
keep=
node_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --memgate) bin=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --pipeline) pipeline=$2; shift 2 ;;
    --protocol) protocol=$2; shift 2 ;;
    --skip-callgrind) callgrind=0; shift ;;
    --keep) keep=$2; shift 2 ;;
    --node-arg) node_args+=("$2"); shift 2 ;;
    *) echo "usage: $0 [--memgate PATH] [--requests N] [--rounds R] [--duration S] [--pipeline P] [--skip-callgrind] [--keep DIR] [--node-arg ARG]... [--protocol text|meta|binary]" >&2; exit 64 ;;
  esac
done
work=$(mktemp -d)
pids=()
trap cleanup EXIT
memcaslap_mix "$work/mix.cfg"
stats() { # port -> "cmd_get cmd_set get_hits"
  exec 3<>/dev/tcp/127.0.0.1/"$1"
  printf 'stats\r\nquit\r\n' >&3
  tr -d '\r' <&3 | awk '$2 == "cmd_get" {g = $3} $2 == "cmd_set" {s = $3} $2 == "get_hits" {h = $3}
    END {print g + 0, s + 0, h + 0}'
  exec 3<&-
}
cpu() { awk '{print $14, $15}' /proc/"$1"/stat; } # utime stime, in ticks
clk=$(getconf CLK_TCK)

# start NAME WRAPPER...: a server (WRAPPER: valgrind or none), its pid and
# port in $pid and $port. Not run in a subshell, so that $pids keeps it for
# cleanup.
start() {
  local name=$1; shift
  port=$(free_port)
  if [ "$name" = memcached ]; then
    (ulimit -n 1024; exec "$@" memcached -p "$port" -l 127.0.0.1 -U 0 -m 1024 -t 4 -c 1012 -u root) >"$work/$name.log" 2>&1 &
  else
    MEMGATE_LOG=warn "$@" "$bin" node --memory-limit 1GiB --insecure-no-auth --listen 127.0.0.1:"$port" ${node_args[@]+"${node_args[@]}"} >"$work/$name.log" 2>&1 &
  fi
  pid=$!; pids+=("$pid")
  wait_port "$port" 30
}

# load NAME PORT PIN -> runs the load NAME (memcaslap or bench-pP) against
# PORT, for $requests requests if $fixed, else for $duration seconds; stops
# unless every get was a hit. PIN: a taskset prefix or nothing.
load() {
  local name=$1 port=$2; shift 2
  local out
  if [ "$name" = memcaslap ]; then
    local span=(-t "${duration}s"); [ "$fixed" = 1 ] && span=(-x "$requests")
    out=$("$@" memcaslap -s 127.0.0.1:"$port" -F "$work/mix.cfg" -T 2 -c 16 "${span[@]}" 2>&1)
    local misses; misses=$(awk '/^get_misses:/ {print $2 + 0}' <<<"$out")
    if [ "${misses:-1}" != 0 ]; then echo "memcaslap counted ${misses:-?} misses" >&2; exit 1; fi
  else
    local span=(--duration "${duration}s"); [ "$fixed" = 1 ] && span=(--requests "$requests")
    out=$("$@" "$bin" bench --server 127.0.0.1:"$port" --connections 16 --pipeline "${name#bench-p}" \
      --protocol "$protocol" --key-space 10000 --value-size 100 --ratio 1:9 "${span[@]}" --json 2>/dev/null)
    python3 -c 'import json, sys
d = json.loads(sys.argv[1])
bad = {k: d[k] for k in ("errors", "misses", "timeouts", "lost", "verify_failures") if d[k]}
sys.exit(f"memgate bench counted {bad}" if bad else 0)' "$out"
  fi
}

prefill() { "$bin" bench --server 127.0.0.1:"$1" --connections 4 --key-space 10000 --value-size 100 --prefill --requests 100 --json >/dev/null 2>&1; }

# requests_between "before" "after" -> requests; stops unless every get hit
requests_between() {
  read -r g0 s0 h0 <<<"$1"; read -r g1 s1 h1 <<<"$2"
  if [ $((h1 - h0)) != $((g1 - g0)) ]; then
    echo "not every get was a hit: $((g1 - g0)) gets, $((h1 - h0)) hits" >&2; exit 1
  fi
  echo $((g1 - g0 + s1 - s0))
}

loads=(memcaslap "bench-p$pipeline")
results=$work/results

if [ "$callgrind" = 1 ]; then
  fixed=1
  for s in memcached memgate; do
    start "$s" valgrind --tool=callgrind --callgrind-out-file="$work/cg.$s.%p"
    prefill "$port"
    for l in "${loads[@]}"; do
      before=$(stats "$port")
      callgrind_control -z "$pid" >/dev/null 2>&1
      load "$l" "$port"
      callgrind_control -d "$pid" >/dev/null 2>&1
      after=$(stats "$port")
      n=$(requests_between "$before" "$after")
      dump=$(ls -t "$work"/cg."$s"."$pid".* | head -1)
      ir=$(awk '/^summary:/ {print $2}' "$dump")
      if [ -n "$keep" ]; then mkdir -p "$keep"; cp "$dump" "$keep/$l.$s.callgrind"; fi
      awk -v s="$s" -v l="$l" -v ir="$ir" -v n="$n" \
        'BEGIN {printf "callgrind %s %s: %d requests, %.0f Ir per request\n", l, s, n, ir / n}'
      echo "callgrind $l $s $((ir / n))" >> "$results"
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
fi

fixed=0
start memcached; mpid=$pid mport=$port
start memgate; npid=$pid nport=$port
taskset -apc 0 "$mpid" >/dev/null; taskset -apc 0 "$npid" >/dev/null
prefill "$mport"; prefill "$nport"
for r in $(seq "$rounds"); do
  order="memcached memgate"; [ $((r % 2)) = 0 ] && order="memgate memcached"
  for l in "${loads[@]}"; do
    for s in $order; do
      if [ "$s" = memcached ]; then port=$mport pid=$mpid; else port=$nport pid=$npid; fi
      before=$(stats "$port"); read -r u0 k0 <<<"$(cpu "$pid")"
      load "$l" "$port" taskset -c 1
      read -r u1 k1 <<<"$(cpu "$pid")"; after=$(stats "$port")
      n=$(requests_between "$before" "$after")
      line=$(awk -v n="$n" -v u=$((u1 - u0)) -v k=$((k1 - k0)) -v c="$clk" -v d="$duration" \
        'BEGIN {printf "%d %.3f %.3f %.3f", n / d, u / c / n * 1e6, k / c / n * 1e6, (u + k) / c / n * 1e6}')
      read -r tps us ks ts <<<"$line"
      echo "round $r pinned $l $s: $tps req/s, CPU per request $ts us (user $us, sys $ks)"
      echo "pinned $l $s $tps $us $ks $ts" >> "$results"
    done
  done
done

python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
loads = sorted({r[1] for r in rows}, key=lambda l: (l != "memcaslap", l))
for l in loads:
    cg = {r[2]: float(r[3]) for r in rows if r[0] == "callgrind" and r[1] == l}
    if len(cg) == 2:
        print(f"{l} callgrind: Ir per request memcached {cg['memcached']:,.0f} memgate {cg['memgate']:,.0f} "
              f"({cg['memgate'] / cg['memcached']:.2f}x)")
    def med(s, i):
        return statistics.median(float(r[i]) for r in rows if r[0] == "pinned" and r[1] == l and r[2] == s)
    if any(r[0] == "pinned" and r[1] == l for r in rows):
        parts = []
        for i, what in [(6, "CPU"), (4, "user"), (5, "sys")]:
            mc, mg = med("memcached", i), med("memgate", i)
            parts.append(f"{what} memcached {mc:.2f} memgate {mg:.2f} us ({mg / mc:.2f}x)")
        tc, tg = med("memcached", 3), med("memgate", 3)
        print(f"{l} pinned, medians per request: " + "; ".join(parts)
              + f"; throughput memcached {tc:,.0f} memgate {tg:,.0f} req/s ({tg / tc:.2f}x)")
PY
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
