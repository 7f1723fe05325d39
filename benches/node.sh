#!/usr/bin/env bash
# Side-by-side benchmark of `memgate node` and memcached 1.6.18, in one run on
# one machine (ratios are what count on a shared machine):
#   1. throughput: memcaslap, 90% get / 10% set, 100-byte values, 16 connections;
#   2. capacity: both filled with 100-byte values at a 64 MiB limit: items held
#      and RSS.
# Usage: benches/node.sh [seconds-per-run] [runs]   (defaults 10 and 3)
# Needs: memcached, libmemcached-tools (memcaslap). Prints a Markdown report.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
runs=${2:-3}
cargo build --release -q
bin=target/release/memgate
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
rss_kib() { awk '/VmRSS/ {print $2}' /proc/"$1"/status; }

# Each sets $pid (no command substitution: that would run in a subshell).
start_memcached() { # port
  memcached -p "$1" -l 127.0.0.1 -U 0 -m 64 -t 4 -u root >/dev/null 2>&1 & pid=$!; pids+=("$pid")
}
start_memgate() { # port
  MEMGATE_LOG=warn "$bin" node --insecure-no-auth --listen 127.0.0.1:"$1" --memory-limit 64MiB >/dev/null 2>&1 & pid=$!; pids+=("$pid")
}

cat > "$work/mix.cfg" <<'CFG'
key
16 16 1
value
100 100 1
cmd
0 0.1
1 0.9
CFG
cat > "$work/fill.cfg" <<'CFG'
key
16 16 1
value
100 100 1
cmd
0 1
1 0
CFG

tps() { # port -> ops/s
  memcaslap -s 127.0.0.1:"$1" -F "$work/mix.cfg" -T 2 -c 16 -t "${secs}s" 2>&1 \
    | awk '/^Run time/ {for (i=1;i<=NF;i++) if ($i=="TPS:") print $(i+1)}' | tail -1
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
minmax() { sort -n | awk 'NR==1{min=$1} {max=$1} END {print min "-" max}'; }

declare -A results
for name in memcached memgate; do
  port=$(free_port)
  "start_$name" "$port"
  wait_port "$port"
  vals=()
  for _ in $(seq "$runs"); do vals+=("$(tps "$port")"); done
  results[$name]="${vals[*]}"
  # Sanity: a server that refuses requests is fast and wrong; show what it did.
  stats=$(printf 'stats\r\nquit\r\n' | timeout 5 nc -q1 127.0.0.1 "$port" 2>/dev/null | tr -d '\r')
  results[${name}_sets]=$(awk '/STAT cmd_set / {print $3}' <<<"$stats")
  results[${name}_hits]=$(awk '/STAT get_hits / {print $3}' <<<"$stats")
  results[${name}_gets]=$(awk '/STAT cmd_get / {print $3}' <<<"$stats")
  # Capacity: set 1.5M distinct keys (far more than fit), then count.
  memcaslap -s 127.0.0.1:"$port" -F "$work/fill.cfg" -T 2 -c 16 -w 100k -x 1600000 >/dev/null 2>&1 || true
  items=$(printf 'stats\r\nquit\r\n' | timeout 5 nc -q1 127.0.0.1 "$port" 2>/dev/null | awk '/STAT curr_items/ {print $3}' | tr -d '\r')
  results[${name}_items]=$items
  results[${name}_rss]=$(rss_kib "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

mc_med=$(echo "${results[memcached]}" | tr ' ' '\n' | median)
mg_med=$(echo "${results[memgate]}" | tr ' ' '\n' | median)
echo "## memgate node vs memcached $(memcached -V | awk '{print $2}')"
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $(date -u +%F)."
echo "Command: \`benches/node.sh $secs $runs\` (memcaslap -T 2 -c 16, 90% get / 10% set, 100-byte values, ${secs}s x $runs runs each)."
echo
echo "| server | ops/s median | min-max | ratio to memcached | sets stored | get hit ratio |"
echo "| --- | ---: | --- | ---: | ---: | ---: |"
for name in memcached memgate; do
  med=$(echo "${results[$name]}" | tr ' ' '\n' | median)
  mm=$(echo "${results[$name]}" | tr ' ' '\n' | minmax)
  hr=$(awk -v h="${results[${name}_hits]}" -v g="${results[${name}_gets]}" 'BEGIN {if (g > 0) printf "%.2f", h/g; else print "n/a"}')
  echo "| $name | $med | $mm | $(awk -v a="$med" -v b="$mc_med" 'BEGIN {printf "%.2f", a/b}') | ${results[${name}_sets]} | $hr |"
done
echo
echo "| server (64 MiB limit, 100-byte values) | items held | RSS | RSS / limit |"
echo "| --- | ---: | ---: | ---: |"
for name in memcached memgate; do
  rss=${results[${name}_rss]}
  echo "| $name | ${results[${name}_items]} | $((rss / 1024)) MiB | $(awk -v r="$rss" 'BEGIN {printf "%.2f", r/65536}') |"
done
echo
echo "Target: memgate RSS <= 1.15 x 64 MiB + 20 MiB = $((64 * 115 / 100 + 20)) MiB."
