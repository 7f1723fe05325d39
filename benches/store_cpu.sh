#!/usr/bin/env bash
# CPU per request and throughput of the node against memcached 1.6.18
# (issue 22), with memcaslap, the workload of compare.sh's node section:
# 90% get / 10% set, 16-byte keys, 100-byte values, 16 connections.
#
#   benches/store_cpu.sh [--rounds N] [--duration S] [--memgate PATH]
#                        [--threads N] [--floor]
#
# The servers are started once, with a 1 GiB limit (memcached -t 4; the
# node with --insecure-no-auth and its default threads, also 4 on a machine
# of up to 4 cores; --threads N gives both N): memcaslap's sets
# write new keys all along (some 100,000 a run), and at 64 MiB the two
# stores' evictions made misses, which are not the CPU per request asked
# about. Each round runs
# memcaslap against each in turn (the order flips every round):
#   pinned:   both servers on CPU 0, memcaslap on CPU 1; the server's utime
#             + stime (/proc/PID/stat) over the run divided by the requests
#             memcaslap counted is its CPU per request;
#   unpinned: the same run without taskset, for throughput.
# Prints each run, then the medians and the ratios memgate / memcached.
# --floor adds two more servers to every round: benches/floor (built here),
# which answers these gets and sets from a plain hash map on one thread and
# does nothing else, over epoll and over io_uring. What it spends is nearly
# all the kernel's, the least any server could; compare it with
# --threads 1, as it has one thread.
# Every run must be real hits: memcaslap must count no get miss, and the
# server's own get_hits must have grown by the gets memcaslap counted (an
# error reply is not a hit), or the script stops.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/lib.sh
source "$repo/benches/lib.sh"
rounds=3
duration=10
bin=$repo/target/release/memgate
threads=
floor=
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --memgate) bin=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --floor) floor=1; shift ;;
    *) echo "usage: $0 [--rounds N] [--duration S] [--memgate PATH] [--threads N] [--floor]" >&2; exit 64 ;;
  esac
done
work=$(mktemp -d)
pids=()
trap cleanup EXIT
memcaslap_mix "$work/mix.cfg"
ticks() { awk '{print $14, $15}' /proc/"$1"/stat; } # utime stime
get_hits() { # port -> the server's get_hits
  exec 3<>/dev/tcp/127.0.0.1/"$1"
  printf 'stats\r\nquit\r\n' >&3
  awk '$2 == "get_hits" {print $3 + 0}' <&3 | tr -d '\r'
  exec 3<&-
}
clk=$(getconf CLK_TCK)

declare -A server_port server_pid
start() { # name command... (the port is appended)
  local name=$1; shift
  server_port[$name]=$(free_port)
  bg "$@" "${server_port[$name]}"
  server_pid[$name]=$pid
}
start memcached sh -c 'exec memcached -l 127.0.0.1 -U 0 -m 1024 -t "$0" -u root -p "$1"' "${threads:-4}"
start memgate sh -c 'MEMGATE_LOG=warn exec "$0" node --memory-limit 1GiB --insecure-no-auth $1 --listen 127.0.0.1:"$2"' \
  "$bin" "${threads:+--threads $threads}"
servers=(memcached memgate)
if [ -n "$floor" ]; then
  cargo build --release --quiet --manifest-path "$repo/benches/floor/Cargo.toml"
  for io in epoll uring; do
    start "floor-$io" sh -c 'exec "$0" "$1" 127.0.0.1:"$2"' "$repo/benches/floor/target/release/memgate-floor" "$io"
    servers+=("floor-$io")
  done
fi
for s in "${servers[@]}"; do wait_port "${server_port[$s]}"; done
# pin NAME CPUS: every thread of that server.
pin() { taskset -apc "$2" "${server_pid[$1]}" >/dev/null; }

run() { # name pinned -> prints "tps cpu user sys" (µs per request)
  local port=${server_port[$1]} pid=${server_pid[$1]} pin=() before after out tps
  [ "$2" = 1 ] && pin=(taskset -c 1)
  local hits_before hits_after gets misses
  hits_before=$(get_hits "$port")
  before=$(ticks "$pid")
  out=$("${pin[@]}" memcaslap -s 127.0.0.1:"$port" -F "$work/mix.cfg" -T 2 -c 16 -t "${duration}s" 2>&1)
  after=$(ticks "$pid")
  hits_after=$(get_hits "$port")
  tps=$(awk '/^Run time/ {for (i = 1; i <= NF; i++) if ($i == "TPS:") v = $(i + 1)} END {print v + 0}' <<<"$out")
  gets=$(awk '/^cmd_get:/ {print $2 + 0}' <<<"$out")
  misses=$(awk '/^get_misses:/ {print $2 + 0}' <<<"$out")
  if [ -z "$gets" ] || [ "${misses:-1}" != 0 ] || [ $((hits_after - hits_before)) -lt $((gets * 99 / 100)) ]; then
    echo "$1: not every get was a hit (memcaslap: $gets gets, ${misses:-?} misses; server: $((hits_after - hits_before)) hits)" >&2
    exit 1
  fi
  awk -v t="$tps" -v d="$duration" -v k="$clk" -v b="$before" -v a="$after" \
    'BEGIN {split(b, x); split(a, y); n = (t > 0 ? t * d : 1); u = (y[1] - x[1]) / k / n * 1e6
            s = (y[2] - x[2]) / k / n * 1e6; printf "%d %.3f %.3f %.3f\n", t, u + s, u, s}'
}

results=$work/results
all_cpus=0-$(($(nproc) - 1))
for r in $(seq "$rounds"); do
  order=("${servers[@]}")
  if [ $((r % 2)) = 0 ]; then
    order=(); for ((i = ${#servers[@]} - 1; i >= 0; i--)); do order+=("${servers[i]}"); done
  fi
  for mode in pinned unpinned; do
    cpus=$all_cpus p=0; [ "$mode" = pinned ] && cpus=0 p=1
    for s in "${servers[@]}"; do pin "$s" "$cpus"; done
    for s in "${order[@]}"; do
      line=$(run "$s" "$p")
      read -r tps cpu user sys <<<"$line"
      echo "round $r $mode $s: $tps ops/s, $cpu us CPU per request (user $user, sys $sys)"
      echo "$mode $s $tps $cpu $user $sys" >> "$results"
    done
  done
done
python3 - "$results" "${servers[@]}" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(mode, s, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == mode and r[1] == s)
for mode in ["pinned", "unpinned"]:
    mc, cc, uc, sc = (med(mode, "memcached", i) for i in (2, 3, 4, 5))
    for s in sys.argv[3:]:
        t, c, u, k = (med(mode, s, i) for i in (2, 3, 4, 5))
        print(f"{mode}: throughput memcached {mc:,.0f} {s} {t:,.0f} ops/s ({t / mc:.2f}x); "
              f"CPU per request memcached {cc:.2f} {s} {c:.2f} us ({c / cc:.2f}x); "
              f"user {uc:.2f} / {u:.2f} ({u / uc:.2f}x), sys {sc:.2f} / {k:.2f} ({k / sc:.2f}x)")
PY
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
