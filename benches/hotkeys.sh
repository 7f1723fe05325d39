#!/usr/bin/env bash
# Hot keys (node::hotkeys, issue 23): how soon a hot key is listed, how close
# its count is, and what counting costs the node per request.
#
#   benches/hotkeys.sh [--rounds N] [--duration S] [--watch S] [--rate OPS]
#                      [--only "accuracy cpu"] [--memgate PATH]
#
# Builds the release binary (unless --memgate). Nodes run on core $NODE_CPU
# (default 0) with --insecure-no-auth (the one cache "default") and an admin
# endpoint; `memgate bench` runs on core $LOAD_CPU (default 1).
#
# accuracy: one node. The admin endpoint is asked once (which starts the
#   counting), then a background load of RATE - RATE/200 ops/s (default
#   99,500) over 1,000,000 uniform keys (each about 0.0001% of the traffic)
#   runs, and after 3 s a second bench adds RATE/200 ops/s (0.5%) on the one
#   key memgate-bench:0, paced on a fixed schedule. The script polls
#   `GET /admin/caches/default/hotkeys?keys=plain` every 0.25 s: the time
#   from the hot load's start to the first answer that lists the key is
#   "listed after"; every answer whose window starts after the hot load
#   settled (1 s after it started) gives the key's count against the truth,
#   RATE/200 × the window's length (the uniform load adds about 0.1 op/s to
#   it), and the window's total against RATE × its length.
# cpu: as benches/whatif.sh measures the what-if tracker: two nodes, one
#   whose hot keys are being counted (asked through the admin endpoint before
#   every round) and one never asked, driven in turn at --rate (default
#   100,000) ops/s, 16 connections x pipeline 16, SET:GET 1:9, 1,000,000 Zipf
#   0.99 keys prefilled, 100-byte values. Rounds alternate the order; node
#   CPU (utime + stime from /proc/PID/stat) per request answered. Every round
#   must have 0 error replies.
#
# Prints both results as Markdown tables; figures are in benches/HOTKEYS.md.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# shellcheck source=benches/lib.sh
source benches/lib.sh

rounds=8
duration=8
watch=20
rate=100000
only="accuracy cpu"
bin=""
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --watch) watch=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --memgate) bin=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "hotkeys.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
NODE_CPU=${NODE_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
TIMEOUT=${TIMEOUT:-5s}
TOKEN=hotkeys-bench-token-0123456789

bin=$(release_memgate "$bin")
work=$(mktemp -d)
pids=()
trap cleanup EXIT

# node NAME: a release node on $NODE_CPU; sets port[NAME], admin[NAME], npid[NAME].
declare -A port admin npid
node() {
  port[$1]=$(free_port)
  admin[$1]=$(free_port)
  bg taskset -c "$NODE_CPU" "$bin" node --listen "127.0.0.1:${port[$1]}" --insecure-no-auth \
      --memory-limit 1GiB --admin-listen "127.0.0.1:${admin[$1]}" --admin-token "$TOKEN"
  npid[$1]=$pid
  wait_port "${port[$1]}"
  wait_port "${admin[$1]}"
}
ask() { # ask NAME [QUERY]: the cache's hot keys, JSON
  curl -sf -H "Authorization: Bearer $TOKEN" \
      "http://127.0.0.1:${admin[$1]}/admin/caches/default/hotkeys${2:-}"
}
bench() { # bench NAME ARGS...: memgate bench on $LOAD_CPU against node NAME
  local name=$1; shift
  taskset -c "$LOAD_CPU" "$bin" bench --server "127.0.0.1:${port[$name]}" \
      --timeout "$TIMEOUT" --json "$@"
}
errors() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["errors"]+d["timeouts"]+d["lost"]+d["verify_failures"])' "$1"; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

if [[ " $only " == *" accuracy "* ]]; then
  node acc
  ask acc >/dev/null
  hot=$((rate / 200))
  cold=$((rate - hot))
  total=$((watch + 6))
  bench acc --connections 16 --pipeline 16 --ratio 1:9 --key-space 1000000 \
      --key-pattern uniform --value-size 100 --rate "$cold" --duration "${total}s" \
      >"$work/cold.json" 2>/dev/null &
  cold_pid=$!
  sleep 3
  t0=$(date +%s%3N)
  bench acc --connections 1 --pipeline 1 --ratio 1:9 --key-space 1 --value-size 100 \
      --rate "$hot" --duration "$((watch + 2))s" >"$work/hot.json" 2>/dev/null &
  hot_pid=$!
  : >"$work/polls.jsonl"
  end=$((t0 + watch * 1000))
  while [ "$(date +%s%3N)" -lt "$end" ]; do
    # "at" is when the answer came back: "listed after" is not flattered.
    view=$(ask acc '?keys=plain&limit=20')
    printf '{"at": %s, "view": %s}\n' "$(date +%s%3N)" "$view" >>"$work/polls.jsonl"
    sleep 0.25
  done
  wait "$hot_pid" "$cold_pid"
  for f in hot cold; do
    [ "$(errors "$work/$f.json")" = 0 ] || { echo "accuracy: $f load had error replies" >&2; exit 1; }
  done
  python3 - "$work/polls.jsonl" "$t0" "$hot" "$rate" "$work/hot.json" "$work/cold.json" <<'PY'
import json, statistics as st, sys
polls, t0, hot, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
hot_run, cold_run = json.load(open(sys.argv[5])), json.load(open(sys.argv[6]))
key = "memgate-bench:0"
listed_after, errs, totals, ranks, rates = None, [], [], [], []
for line in open(polls):
    p = json.loads(line)
    v = p["view"]
    found = [i for i, k in enumerate(v["by_ops"]) if k["key"] == key]
    if found and listed_after is None:
        listed_after = (p["at"] - t0) / 1000
    if v["start_ms"] >= t0 + 1000:
        secs = (v["end_ms"] - v["start_ms"]) / 1000
        truth = hot * secs
        got = v["by_ops"][found[0]]["count"] if found else 0
        errs.append((got - truth) / truth)
        totals.append((v["ops"] - rate * secs) / (rate * secs))
        ranks.append(found[0] + 1 if found else None)
        rates.append(v["sample_rate"])
print(f"offered: {rate - hot:,} ops/s over 1,000,000 uniform keys + {hot:,} ops/s on {key} "
      f"({100 * hot / rate:.2f}%); answered {cold_run['ops_per_sec']:,.0f} + {hot_run['ops_per_sec']:,.0f} ops/s, "
      f"0 errors")
print()
print("| figure | value |")
print("| --- | ---: |")
print(f"| hot key listed after (s) | {listed_after if listed_after is not None else 'never'} |")
if errs:
    within = sum(abs(e) <= 0.10 for e in errs)
    print(f"| windows compared (started after the hot load settled) | {len(errs)} |")
    print(f"| hot key count error, median (min-max) | {100 * st.median(errs):+.1f}% "
          f"({100 * min(errs):+.1f}% to {100 * max(errs):+.1f}%) |")
    print(f"| hot key count within 10% | {within} of {len(errs)} |")
    print(f"| window total error, median (min-max) | {100 * st.median(totals):+.1f}% "
          f"({100 * min(totals):+.1f}% to {100 * max(totals):+.1f}%) |")
    print(f"| hot key's rank (1 = top) | {sorted(set(ranks), key=str)} |")
    print(f"| sample rate | {sorted(set(rates))} |")
PY
  echo
fi

if [[ " $only " == *" cpu "* ]]; then
  node on
  node off
  load=(--connections 16 --pipeline 16 --ratio 1:9 --key-space 1000000 --key-pattern zipf
        --value-size 100)
  for mode in on off; do
    bench "$mode" "${load[@]}" --prefill --duration 3s >"$work/warm.json" 2>/dev/null
    [ "$(errors "$work/warm.json")" = 0 ] || { echo "warm-up errors ($mode)" >&2; exit 1; }
  done
  tck=$(getconf CLK_TCK)
  ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  raw=$work/rounds.tsv
  printf 'round\tmode\tops\tops_per_sec\terrors\tcpu_us_per_req\n' >"$raw"
  for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) = 1 ]; then order="on off"; else order="off on"; fi
    for mode in $order; do
      # Keeps the "on" node counting (and checks that it does).
      if [ "$mode" = on ]; then ask on '?limit=1' >/dev/null; fi
      c0=$(ticks "${npid[$mode]}")
      bench "$mode" "${load[@]}" --duration "${duration}s" --rate "$rate" >"$work/r.json" 2>/dev/null
      c1=$(ticks "${npid[$mode]}")
      python3 - "$r" "$mode" "$c0" "$c1" "$tck" "$work/r.json" >>"$raw" <<'PY'
import json, sys
r, mode, c0, c1, tck, path = sys.argv[1:]
d = json.load(open(path))
errors = d["errors"] + d["timeouts"] + d["lost"] + d["verify_failures"]
us = (int(c1) - int(c0)) / int(tck) * 1e6 / d["ops"]
print(f"{r}\t{mode}\t{d['ops']}\t{d['ops_per_sec']:.0f}\t{errors}\t{us:.3f}")
PY
      tail -n 1 "$raw" >&2
      [ "$(tail -n 1 "$raw" | cut -f5)" = 0 ] || { echo "round $r ($mode): error replies" >&2; exit 1; }
    done
  done
  sample_rate=$(ask on '?limit=1' | python3 -c 'import json,sys; print(json.load(sys.stdin)["sample_rate"])')
  python3 - "$raw" "$rate" "$rounds" "$duration" "$sample_rate" <<'PY'
import csv, statistics as st, sys
raw, rate, rounds, duration, sample_rate = sys.argv[1:]
rows = list(csv.DictReader(open(raw), delimiter="\t"))
col = lambda mode, name: [float(r[name]) for r in rows if r["mode"] == mode]
print(f"rate {int(rate):,} ops/s, 16 connections x pipeline 16, SET:GET 1:9, 1,000,000 keys "
      f"(zipf 0.99), 100 B values, {rounds} rounds x {duration} s per mode; "
      f"sample rate of the counting node at the end: {sample_rate}")
print()
print("| hot keys | node CPU us/request, median (min-max) | ops/s, median (min-max) | errors |")
print("| --- | ---: | ---: | ---: |")
for mode, name in (("on", "counting"), ("off", "never asked")):
    us, ops = col(mode, "cpu_us_per_req"), col(mode, "ops_per_sec")
    print(f"| {name} | {st.median(us):.3f} ({min(us):.3f}-{max(us):.3f}) "
          f"| {st.median(ops):,.0f} ({min(ops):,.0f}-{max(ops):,.0f}) | {int(sum(col(mode, 'errors')))} |")
on, off = col("on", "cpu_us_per_req"), col("off", "cpu_us_per_req")
pairs = [a / b for a, b in zip(on, off)]
print()
print(f"counting / never asked, ratio of the medians: {st.median(on) / st.median(off):.4f}")
print(f"counting / never asked, per-round pairs: median {st.median(pairs):.4f} "
      f"({min(pairs):.4f}-{max(pairs):.4f})")
PY
fi
echo
echo "load average before $load_before, after $(cut -d' ' -f1-3 /proc/loadavg)"
