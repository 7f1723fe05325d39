#!/usr/bin/env bash
# CPU cost of the what-if tracker (mrc, issue 13): node CPU per
# request with the tracker on against the same node with `--what-if off`.
#
#   benches/whatif.sh [--rounds N] [--duration S] [--rate OPS] [--out FILE]
#                     [--memgate PATH]
#
# Builds the release binary (unless --memgate), then starts two release
# nodes on core $NODE_CPU (default 0), one with the tracker on and one with
# it off, and drives them in turn with `memgate bench` on core $LOAD_CPU
# (default 1): a 90% get / 10% set Zipf 0.99 stream over $KEYS keys (default
# 1,000,000, prefilled once, so the tracker's sample rate has dropped to
# about 2048 / KEYS and nearly every request takes the sampled-out path)
# with 100-byte values, $CONNECTIONS connections x pipeline $PIPELINE
# (defaults 16 and 16).
# Rounds are interleaved, the order flipping every round (on off, off on,
# ...), so that drift on a shared machine falls on both. Each round reads
# the node's utime + stime from /proc/PID/stat before and after the bench
# and divides by the requests answered: node CPU us per request. Every
# round's error replies must be 0 (the script fails otherwise). Closed loop
# by default; --rate paces the offered load instead (e.g. 100000).
#
# Prints one line per round, then median and min-max per mode, the ratio of
# the medians and the median of the per-round ratios (on / off, each
# round's pair side by side), and the load average; --out also keeps the
# raw rounds as TSV. Results: benches/WHATIF.md.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

rounds=8
duration=10
rate=""
out=""
bin=""
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --memgate) bin=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "whatif.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
NODE_CPU=${NODE_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
KEYS=${KEYS:-1000000}
CONNECTIONS=${CONNECTIONS:-16}
PIPELINE=${PIPELINE:-16}
# A reply later than this is an error; generous, because on a loaded shared
# machine a pinned process can lose the CPU for over a second.
TIMEOUT=${TIMEOUT:-5s}

if [ -z "$bin" ]; then
  nice cargo build --release --bin memgate >&2
  bin=target/release/memgate
fi
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A port pid
for mode in on off; do
  port[$mode]=$(free_port)
  taskset -c "$NODE_CPU" "$bin" node --listen "127.0.0.1:${port[$mode]}" --insecure-no-auth \
      --memory-limit 1GiB --what-if "$mode" >"$dir/node-$mode.log" 2>&1 &
  pid[$mode]=$!
  pids+=("$!")
done
sleep 1
for mode in on off; do
  kill -0 "${pid[$mode]}" || { cat "$dir/node-$mode.log" >&2; exit 1; }
done

tck=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
bench() {
  local mode=$1; shift
  taskset -c "$LOAD_CPU" "$bin" bench --server "127.0.0.1:${port[$mode]}" \
      --connections "$CONNECTIONS" --pipeline "$PIPELINE" --ratio 1:9 \
      --key-space "$KEYS" --key-pattern zipf --value-size 100 \
      --timeout "$TIMEOUT" --json "$@"
}
field() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[sys.argv[1]])' "$1"; }

# Fill every key once, then warm up (the sample settles, the LRU is full).
for mode in on off; do
  bench "$mode" --prefill --duration 3s >"$dir/warm-$mode.json"
  [ "$(field errors <"$dir/warm-$mode.json")" = 0 ] || { echo "warm-up errors ($mode)" >&2; exit 1; }
done

raw=$dir/rounds.tsv
printf 'round\tmode\tops\tops_per_sec\terrors\tcpu_us_per_req\thit_ratio\n' >"$raw"
extra=()
[ -n "$rate" ] && extra=(--rate "$rate")
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then order="on off"; else order="off on"; fi
  for mode in $order; do
    c0=$(ticks "${pid[$mode]}")
    bench "$mode" --duration "${duration}s" "${extra[@]}" >"$dir/r.json"
    c1=$(ticks "${pid[$mode]}")
    python3 - "$r" "$mode" "$c0" "$c1" "$tck" "$dir/r.json" >>"$raw" <<'PY'
import json, sys
r, mode, c0, c1, tck, path = sys.argv[1:]
d = json.load(open(path))
errors = d["errors"] + d["timeouts"] + d["lost"] + d["verify_failures"]
if errors:
    print(f"round {r} ({mode}): errors {d['errors']} timeouts {d['timeouts']} "
          f"lost {d['lost']} verify {d['verify_failures']}", file=sys.stderr)
us = (int(c1) - int(c0)) / int(tck) * 1e6 / d["ops"]
print(f"{r}\t{mode}\t{d['ops']}\t{d['ops_per_sec']:.0f}\t{errors}\t{us:.3f}\t{d['hit_ratio']:.4f}")
PY
    tail -n 1 "$raw" >&2
    [ "$(tail -n 1 "$raw" | cut -f5)" = 0 ] || { echo "round $r ($mode): error replies" >&2; exit 1; }
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
[ -n "$out" ] && cp "$raw" "$out"

python3 - "$raw" <<PY
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def col(mode, name):
    return [float(r[name]) for r in rows if r["mode"] == mode]
print(f"memgate bench: {'closed loop' if not '$rate' else 'rate $rate ops/s'}, "
      f"$CONNECTIONS connections x pipeline $PIPELINE, SET:GET 1:9, $KEYS keys (zipf 0.99), "
      f"100 B values, $rounds rounds x ${duration} s per mode; node on CPU $NODE_CPU, load on CPU $LOAD_CPU")
print(f"load average before {'$load_before'}, after {'$load_after'}")
print()
print("| tracker | node CPU us/request, median (min-max) | ops/s, median (min-max) | errors |")
print("| --- | ---: | ---: | ---: |")
for mode in ("on", "off"):
    us, ops = col(mode, "cpu_us_per_req"), col(mode, "ops_per_sec")
    errors = int(sum(col(mode, "errors")))
    print(f"| {mode} | {st.median(us):.3f} ({min(us):.3f}-{max(us):.3f}) "
          f"| {st.median(ops):,.0f} ({min(ops):,.0f}-{max(ops):,.0f}) | {errors} |")
on, off = col("on", "cpu_us_per_req"), col("off", "cpu_us_per_req")
pairs = [a / b for a, b in zip(on, off)]
print()
print(f"on / off, ratio of the medians: {st.median(on) / st.median(off):.4f}")
print(f"on / off, per-round pairs: median {st.median(pairs):.4f} "
      f"({min(pairs):.4f}-{max(pairs):.4f})")
PY
