#!/usr/bin/env bash
# The side-by-side benchmark report, in one run on one machine (issue 5).
#
# Everything is started here, on loopback, on free ports, in a temp dir, and
# killed on exit. Measured, with memgate bench (closed loop and fixed rate,
# HDR percentiles) and with memcaslap (an independent tool) where it can:
#   1. the sidecar paths: memcached direct | twemproxy -> 3 memcached
#      | stunnel -> memcached -Z | memgate proxy -> 3 memcached -S -Z (SASL)
#      | memgate proxy -> 3 memgate nodes (TLS + SASL);
#   2. the node: memgate node vs memcached, throughput, then items held and
#      RSS when filled with 100-byte values at a 64 MiB limit;
#   3. connection churn through every path: memgate bench --churn, each of
#      N workers looping connect, one get (verified), close, at a few
#      levels of N, with the proxy's and the servers' CPU per connection;
#   4. latency at a fixed offered load, 30% and 60% of the *slowest* path's
#      peak (so that every path can carry it), and the 1-connection latency
#      table (closed loop, several rounds), with low-rate checks (1,000 and 4,000 ops/s) of the
#      paced sender against the direct path's closed-loop p50;
#   5. scaling: throughput and p99 at 1, 4, 16, 64, 256 connections.
# Beside each memgate bench point: the CPU time (utime + stime from
# /proc/PID/stat) that the proxy and the servers of the path spent, per
# request answered without an error, and the error and miss replies (error
# replies never count as throughput).
#
# Pinning (taskset, when there are 2+ CPUs): every load generator runs on CPU
# 1 and every server-side process (memcached, twemproxy, stunnel, memgate
# proxy and nodes) on CPU 0. A proxy's backends share its core on purpose:
# then the whole path's server-side work is charged to one core whatever the
# path, a path's throughput is that core over the path's CPU per request, and
# the load generator (which on the direct path needs more CPU than the
# server) never competes with what it measures. Override with
# MEMGATE_COMPARE_LOAD_CPUS / MEMGATE_COMPARE_SERVER_CPUS (taskset -c lists),
# or MEMGATE_COMPARE_PIN=0 to run unpinned. The fixed-rate runs' load
# generator is pinned the same way (MEMGATE_COMPARE_PACED_CPUS gives it other
# CPUs): since its pacer stopped spinning for long, a paced sender on one
# contended core leaves on time (benches/NOTES.md, "bench --rate").
# Extra proxy flags (e.g. an upstream protocol choice) come from the
# environment, word-split: MEMGATE_COMPARE_PROXY_ARGS (both memgate proxies),
# MEMGATE_COMPARE_PROXY_ARGS_MEMCACHED (the one before memcached -S -Z, which
# always gets --upstream-protocol binary: -S has no text protocol) and
# MEMGATE_COMPARE_PROXY_ARGS_NODES (the one before the memgate nodes). The
# 1-connection table also has a sidecar with --busy-poll in front of the
# same memgate nodes (MEMGATE_COMPARE_BUSY_POLL, default 100us).
# Workload (the node and proxy issues'): 90% get / 10% set, 100-byte values,
# 16 connections, key space prefilled. Every figure is repeated (paths
# interleaved within each repeat, so noise on a shared machine spreads over
# all of them); benches/compare.py turns the raw runs into RESULTS.md
# (medians, min-max, ratios) and SVG plots.
#
# Usage: benches/compare.sh [--duration S] [--repeats N] [--levels "1 4 16"]
#                           [--rounds N] [--churn-levels "1 16 64"]
#                           [--only "paths rates latency churn node"]
#                           [--quick|--smoke] [--out DIR] [--memgate PATH]
#   --rounds  rounds of the 1-connection latency table (default 5).
#   --churn-levels  concurrent churn workers (default "1 16 64"; the target
#             is read at the most: stunnel saturates well below 64).
#   --only    run only these sections (default all): paths = 1 and 5,
#             rates = 4 (needs paths, for the peak), latency = 1b and the
#             paced check, churn = 3 (and the idle RSS), node = 2. The report
#             then has only those.
#   --smoke   1 s per point, 1 repeat, 16 connections only, small fills; writes
#             to a temp dir (or --out), never to the committed RESULTS.md.
#   --memgate use this binary instead of building the release one.
# Needs: memcached, libmemcached-tools (memcaslap), stunnel4, nutcracker,
# sasl2-bin (saslpasswd2), python3.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
here=$repo/benches
. "$here/lib.sh"

duration=5
repeats=3
levels="1 4 16 64 256"
rounds=5
churn_levels="1 16 64" churn_given=0
only="paths rates latency churn node"
smoke=0
out=""
bin=""
while [ $# -gt 0 ]; do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --levels) levels=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --churn-levels) churn_levels=$2 churn_given=1; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --quick | --smoke) smoke=1; shift ;;
    --out) out=$2; shift 2 ;;
    --memgate) bin=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
# How many 100-byte sets fill a 64 MiB node: ~350k fit, so twice that evicts.
fill_keys=700000
if [ "$smoke" = 1 ]; then
  duration=1 repeats=1 levels="16" rounds=1 fill_keys=20000
  [ "$churn_given" = 1 ] || churn_levels="8"
  [ -n "$out" ] || out=$(mktemp -d -t memgate-compare.XXXXXX)
fi
[ -n "$out" ] || out=$here
for section in $only; do
  case $section in paths | rates | latency | churn | node) ;; *)
    echo "compare.sh: unknown section $section (see --help)" >&2; exit 64 ;; esac
done
wants() { [[ " $only " == *" $1 "* ]]; }
if wants rates && ! wants paths; then
  echo "compare.sh: --only rates needs paths (the rates are shares of the paths' peak)" >&2; exit 64
fi
mkdir -p "$out/plots"
if [ -z "$bin" ]; then
  (cd "$repo" && cargo build --release -q)
  bin=$repo/target/release/memgate
fi
bin=$(realpath "$bin")
started=$(date +%s)

work=$(mktemp -d -t memgate-compare-work.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # MEMGATE_COMPARE_KEEP=DIR keeps the raw runs (to re-render the report).
  if [ -n "${MEMGATE_COMPARE_KEEP:-}" ]; then mkdir -p "$MEMGATE_COMPARE_KEEP" && cp -r "$work/." "$MEMGATE_COMPARE_KEEP"; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Raw results, one measurement a line: section path tool conns repeat value
# (value is a figure, or a memgate bench JSON file); compare.py reads them.
raw=$work/raw.tsv
: > "$raw"
mkdir -p "$work/runs"
helper() { python3 "$here/compare.py" "$@"; }
# The CPUs of each side (see the header); empty arrays when unpinned.
pin_load=() pin_server=() pin_paced=()
if [ "${MEMGATE_COMPARE_PIN:-1}" != 0 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin_load=(taskset -c "${MEMGATE_COMPARE_LOAD_CPUS:-1}")
  pin_server=(taskset -c "${MEMGATE_COMPARE_SERVER_CPUS:-0}")
  pin_paced=(taskset -c "${MEMGATE_COMPARE_PACED_CPUS:-${MEMGATE_COMPARE_LOAD_CPUS:-1}}")
fi
load_helper() { "${pin_load[@]}" python3 "$here/compare.py" "$@"; }
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$raw"; }
# The exact commands, as run; the report keeps the first of each kind.
note() { printf '%s\n' "$*" >> "$work/commands.txt"; }

free_port() { helper port; }
wait_port() {
  for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done
  echo "compare.sh: port $1 never opened" >&2; exit 1
}
# Start in the background, remembered for cleanup; sets $pid (no command
# substitution: that would run it in a subshell). taskset execs the command,
# so $pid is the server's own, whose /proc/PID/stat the CPU figures read.
bg() { note "${pin_server[@]}" "$@"; "${pin_server[@]}" "$@" >/dev/null 2>>"$work/servers.log" & pid=$!; pids+=("$pid"); }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
rss_kib() { awk '/VmRSS/ {print $2}' /proc/"$1"/status; }
# utime + stime (fields 14 and 15, clock ticks; all threads) summed over PIDs.
# No process name here has a space, so the fields split plainly.
cpu_ticks() {
  local files=() p
  for p in "$@"; do files+=("/proc/$p/stat"); done
  if [ ${#files[@]} = 0 ]; then echo 0; else awk '{s += $14 + $15} END {print s + 0}' "${files[@]}"; fi
}
clk_tck=$(getconf CLK_TCK)

# ---------------------------------------------------------------- set-up
# PKI, one cache with one credential for the memgate nodes, the same
# credential in a sasldb for memcached -S.
"$bin" certs --out "$work/pki" --node localhost >/dev/null
user=bench pass=bench-password-123
cache_toml bench 64MiB "$user" password "$pass" > "$work/caches.toml"
echo -n "$pass" | saslpasswd2 -p -a memcached -c -f "$work/sasldb" "$user"
printf 'mech_list: plain\nsasldb_path: %s\n' "$work/sasldb" > "$work/memcached.conf"
tls_opts="ssl_chain_cert=$work/pki/localhost.crt,ssl_key=$work/pki/localhost.key"
export MEMGATE_LOG=warn

memcached_at() { # port [memcached flags...]: 64 MiB, as every server here
  local port=$1; shift
  bg memcached -p "$port" -l 127.0.0.1 -U 0 -m 64 -u root "$@"
}
node_at() { # port [memgate node flags...]
  local port=$1; shift
  bg "$bin" node --memory-limit 64MiB "$@"
}
# memcached direct; three plain ones behind twemproxy; one -Z behind stunnel;
# three -S -Z (SASL from the sasldb) behind memgate; three memgate nodes.
# Each path's proxy PID and server PIDs, for the CPU figures.
declare -A proxy_pids server_pids
direct=$(free_port); memcached_at "$direct" -t 4; server_pids[direct]=$pid
plain=(); for _ in 1 2 3; do p=$(free_port); plain+=("$p"); memcached_at "$p" -t 1; server_pids[twemproxy]+=" $pid"; done
mz=$(free_port); memcached_at "$mz" -t 4 -Z -o "$tls_opts"; server_pids[stunnel]=$pid
export SASL_CONF_PATH=$work
szs=(); for _ in 1 2 3; do
  p=$(free_port); szs+=("$p"); memcached_at "$p" -t 1 -S -Z -o "$tls_opts"; server_pids[memgate-memcached]+=" $pid"
done
nodes=(); for _ in 1 2 3; do
  p=$(free_port); nodes+=("$p")
  node_at "$p" --listen none --tls-listen 127.0.0.1:"$p" --caches "$work/caches.toml" \
    --cert "$work/pki/localhost.crt" --key "$work/pki/localhost.key"
  server_pids[memgate-nodes]+=" $pid"
done

# twemproxy (ketama, md5, as libmemcached) over the plain three.
tw=$(free_port)
{
  printf 'bench:\n  listen: 127.0.0.1:%s\n  hash: md5\n  distribution: ketama\n  timeout: 1000\n  servers:\n' "$tw"
  for p in "${plain[@]}"; do printf '    - 127.0.0.1:%s:1\n' "$p"; done
} > "$work/nutcracker.yml"
bg nutcracker -c "$work/nutcracker.yml" -s "$(free_port)" -a 127.0.0.1 -o "$work/nutcracker.log"
proxy_pids[twemproxy]=$pid
# stunnel in client mode, as the buildpack ran it (verify = 2 against the CA).
st=$(free_port)
cat > "$work/stunnel.conf" <<CONF
foreground = yes
pid =
[memcache]
client = yes
accept = 127.0.0.1:$st
connect = 127.0.0.1:$mz
verify = 2
CAfile = $work/pki/ca.crt
CONF
bg stunnel4 "$work/stunnel.conf"
proxy_pids[stunnel]=$pid
# The memgate sidecar in front of memcached -S -Z and of the memgate nodes.
server_list() { local out="" i=1; for p in "$@"; do out+="${out:+,}n$i=127.0.0.1:$p"; i=$((i + 1)); done; echo "$out"; }
proxy_at() { # port "extra flags" backend-ports...
  local port=$1 extra=$2; shift 2
  # shellcheck disable=SC2086 # the extra flags are word-split on purpose
  bg "$bin" proxy --listen 127.0.0.1:"$port" --servers "$(server_list "$@")" --ca "$work/pki/ca.crt" \
    --server-name localhost --username "$user" --password "$pass" --metrics-listen none \
    ${MEMGATE_COMPARE_PROXY_ARGS:-} $extra
}
pm=$(free_port); proxy_at "$pm" "--upstream-protocol binary ${MEMGATE_COMPARE_PROXY_ARGS_MEMCACHED:-}" "${szs[@]}"; proxy_pids[memgate-memcached]=$pid
pn=$(free_port); proxy_at "$pn" "${MEMGATE_COMPARE_PROXY_ARGS_NODES:-}" "${nodes[@]}"; proxy_pid=$pid
proxy_pids[memgate-nodes]=$pid
# A second sidecar in front of the same memgate nodes, with --busy-poll
# (off by default), for the 1-connection table only.
busy_poll=${MEMGATE_COMPARE_BUSY_POLL:-100us}
pb=$(free_port); proxy_at "$pb" "--busy-poll $busy_poll ${MEMGATE_COMPARE_PROXY_ARGS_NODES:-}" "${nodes[@]}"
proxy_pids[memgate-nodes-poll]=$pid server_pids[memgate-nodes-poll]=${server_pids[memgate-nodes]}
for p in "$direct" "${plain[@]}" "$mz" "${szs[@]}" "${nodes[@]}" "$tw" "$st" "$pm" "$pn" "$pb"; do wait_port "$p"; done

# The paths, in the order of every table; compare.py knows their names.
paths=(direct twemproxy stunnel memgate-memcached memgate-nodes)
declare -A port=([direct]=$direct [twemproxy]=$tw [stunnel]=$st [memgate-memcached]=$pm [memgate-nodes]=$pn [memgate-nodes-poll]=$pb)
# The 1-connection table's paths: the above and the busy-polling sidecar.
lat_paths=("${paths[@]}" memgate-nodes-poll)

# ---------------------------------------------------------------- the tools
memcaslap_mix "$work/mix.cfg"
sed 's/^0 0.1$/0 1/; s/^1 0.9$/1 0/' "$work/mix.cfg" > "$work/fill.cfg"
keys=10000
bench_args=(--protocol text --value-size 100)
mix=(--ratio 1:9) # unless a point gives its own --ratio

memcaslap_ops() { # port conns -> "ops/s get_misses" (memcaslap: one thread per core at most)
  # memcaslap counts no error replies; its get misses are shown as they are
  # (it reads keys of its own, not the prefilled ones).
  local threads=$(($2 < 2 ? $2 : 2))
  local cmd=("${pin_load[@]}" memcaslap -s 127.0.0.1:"$1" -F "$work/mix.cfg" -T "$threads" -c "$2" -t "${duration}s")
  note "${cmd[@]}"
  timeout $((duration + 60)) "${cmd[@]}" 2>&1 | awk '
    /^get_misses:/ {m = $2}
    /^Run time/ {for (i = 1; i <= NF; i++) if ($i == "TPS:") v = $(i + 1)}
    END {print v + 0, m + 0}'
}
bench_json() { # file port args...: one memgate bench run, its JSON kept
  # (paced=1 in the environment: a fixed-rate run, pinned as pin_paced)
  local file=$1 port=$2 pin=("${pin_load[@]}") ratio=("${mix[@]}"); shift 2
  [ "${paced:-0}" = 0 ] || pin=("${pin_paced[@]}")
  [[ " $* " != *" --ratio "* ]] || ratio=()
  local cmd=("${pin[@]}" "$bin" bench --server 127.0.0.1:"$port" "${bench_args[@]}" "${ratio[@]}" --json "$@")
  note "${cmd[@]}"
  timeout $((duration * 4 + 120)) "${cmd[@]}" > "$file" 2>>"$work/bench.log" || {
    echo "compare.sh: memgate bench failed on port $port (${file##*/}); see below" >&2
    tail -3 "$work/bench.log" >&2; exit 1
  }
}
bench_point() { # file path args...: bench_json, and FILE.cpu with the
  # ticks the path's proxy and servers spent meanwhile: "proxy servers CLK_TCK"
  local file=$1 path=$2; shift 2
  local pp=${proxy_pids[$path]:-} sp=${server_pids[$path]:-}
  # shellcheck disable=SC2086 # PID lists
  local p0 s0; p0=$(cpu_ticks $pp); s0=$(cpu_ticks $sp)
  bench_json "$file" "${port[$path]}" "$@"
  # shellcheck disable=SC2086
  echo "$(($(cpu_ticks $pp) - p0)) $(($(cpu_ticks $sp) - s0)) $clk_tck" > "$file.cpu"
}
closed_loop() { # section path conns repeat: both tools, recorded
  local section=$1 path=$2 c=$3 r=$4
  record "$section" "$path" memcaslap "$c" "$r" "$(memcaslap_ops "${port[$path]}" "$c")"
  local f=$work/runs/$section-$path-$c-$r.json
  bench_point "$f" "$path" --key-space "$keys" --connections "$c" --duration "${duration}s"
  record "$section" "$path" bench "$c" "$r" "$f"
}
prefill() { # port: set every key once so that gets hit
  bench_json "$work/runs/prefill-$1.json" "$1" --key-space "$keys" --prefill --requests 1 --connections 16 --pipeline 8
}
progress() { echo "[$(($(date +%s) - started))s] $*" >&2; }

for path in "${lat_paths[@]}"; do prefill "${port[$path]}"; done
# The sidecar's memory before any load (the proxy issue's "idle RSS").
record rss-start memgate-nodes python 0 1 "$(rss_kib "$proxy_pid")"
helper facts > "$work/facts-start.tsv"

# ------------------------------------- 1 + 5: the paths, scaling and 16 conns
# Each repeat walks every level and every path; the order of the paths turns
# by one each repeat, so none is always first after a pause.
if wants paths; then
for r in $(seq "$repeats"); do
  for c in $levels; do
    for i in "${!paths[@]}"; do
      path=${paths[$(((i + r) % ${#paths[@]}))]}
      progress "repeat $r/$repeats, $c connections, $path"
      closed_loop scale "$path" "$c" "$r"
    done
  done
done
fi

# ------------------------------------------- 4: latency at a fixed offered load
# Each path's peak is its median memgate bench throughput at the issues' 16
# connections (errors excluded); the rates are 30% and 60% of the slowest
# path's, so every path can carry them and the tables compare latency, not
# queues (latency counts from each intended send time, so a queue would show).
if wants rates; then
read -r peak slowest <<<"$(helper peak "$raw")"
for r in $(seq "$repeats"); do
  for pct in 30 60; do
    rate=$((peak * pct / 100))
    for i in "${!paths[@]}"; do
      path=${paths[$(((i + r) % ${#paths[@]}))]}
      progress "repeat $r/$repeats, $pct% of $slowest's $peak ops/s, $path"
      f=$work/runs/rate$pct-$path-$r.json
      paced=1 bench_point "$f" "$path" --key-space "$keys" --connections 16 --rate "$rate" --timeout 30s --duration "${duration}s"
      record "rate$pct" "$path" bench 16 "$r" "$f"
    done
  done
done
fi

# The 1-connection latency table: closed loop, memgate bench only (memcaslap
# reports no percentiles), rounds with the paths interleaved. Each round ends
# with the direct path at low fixed rates on one connection, whose p50 must
# match the closed-loop one if the paced sender leaves on time. Two rates:
# at 1,000 ops/s this VM's idle CPUs add their wake-up to every request
# (benches/NOTES.md, "bench --rate"); at 4,000 they hardly idle.
low_rates="1000 4000"
if wants latency; then
for r in $(seq "$rounds"); do
  for i in "${!lat_paths[@]}"; do
    path=${lat_paths[$(((i + r) % ${#lat_paths[@]}))]}
    progress "round $r/$rounds, 1 connection, $path"
    f=$work/runs/lat1-$path-$r.json
    bench_point "$f" "$path" --key-space "$keys" --connections 1 --duration "${duration}s"
    record lat1 "$path" bench 1 "$r" "$f"
  done
  for low_rate in $low_rates; do
    progress "round $r/$rounds, 1 connection at $low_rate ops/s, direct"
    f=$work/runs/lowrate-direct-$low_rate-$r.json
    paced=1 bench_point "$f" direct --key-space "$keys" --connections 1 --rate "$low_rate" --timeout 30s --duration "${duration}s"
    record lowrate direct bench "$low_rate" "$r" "$f"
  done
done
fi

# --------------------------------------------------- 3: connection churn
# memgate bench --churn: each worker connects, sends one get of a prefilled
# key, checks the reply (--verify: the key's own value), closes, and again.
# Behind stunnel every connection is a TLS handshake with memcached -Z; the
# memgate sidecar keeps its upstream connections, so it pays only the
# accept and the session. Levels and paths interleave as in section 1.
if wants churn; then
churn_args=(--churn --ratio 0:1 --verify --key-space "$keys" --timeout 2s --duration "${duration}s")
for r in $(seq "$repeats"); do
  for c in $churn_levels; do
    for i in "${!paths[@]}"; do
      path=${paths[$(((i + r) % ${#paths[@]}))]}
      progress "repeat $r/$repeats, churn, $c workers, $path"
      f=$work/runs/churn-$path-$c-$r.json
      bench_point "$f" "$path" "${churn_args[@]}" --connections "$c"
      record churn "$path" bench "$c" "$r" "$f"
    done
  done
done
# The sidecar's memory: after all the above, and with 2000 idle clients.
read -r before after each <<<"$(load_helper idle "$pn" "$proxy_pid" "$([ "$smoke" = 1 ] && echo 200 || echo 2000)")"
record idle memgate-nodes python 0 1 "$before $after $each"
fi
helper facts > "$work/facts-end.tsv"
stop "$proxy_pid"
stop "${proxy_pids[memgate-nodes-poll]}"

# ------------------------------------------------------------- 2: the node
if wants node; then
# Throughput against the memcached above (same flags) and one memgate node
# without login, interleaved; then each filled, on a fresh process per fill.
np=$(free_port); node_at "$np" --insecure-no-auth --listen 127.0.0.1:"$np"; node_pid=$pid
server_pids[memcached]=${server_pids[direct]} server_pids[memgate]=$node_pid
wait_port "$np"; prefill "$np"
for r in $(seq "$repeats"); do
  for server in memcached memgate; do
    p=$direct; [ "$server" = memgate ] && p=$np
    progress "repeat $r/$repeats, node throughput, $server"
    port[$server]=$p
    closed_loop node "$server" 16 "$r"
  done
done
stop "$node_pid"
fill() { # server tool repeat: a fresh server, filled, then items and RSS
  local server=$1 tool=$2 r=$3 p
  p=$(free_port)
  if [ "$server" = memcached ]; then memcached_at "$p" -t 4; else node_at "$p" --insecure-no-auth --listen 127.0.0.1:"$p"; fi
  wait_port "$p"
  if [ "$tool" = memcaslap ]; then
    local cmd=("${pin_load[@]}" memcaslap -s 127.0.0.1:"$p" -F "$work/fill.cfg" -T 2 -c 16 -w "$((fill_keys / 16 / 1000 + 1))k" -x "$fill_keys")
    note "${cmd[@]}"
    timeout 600 "${cmd[@]}" > /dev/null 2>&1 || true
  else
    bench_json "$work/runs/fill-$server-$r.json" "$p" --prefill --key-space "$fill_keys" --requests 1 --connections 16 --pipeline 8
  fi
  record "fill-$tool" "$server" "$tool" 16 "$r" "$(helper items "$p") $(rss_kib "$pid")"
  stop "$pid"
}
for r in $(seq "$repeats"); do
  for tool in memcaslap bench; do
    for server in memcached memgate; do
      progress "repeat $r/$repeats, fill with $tool, $server"
      fill "$server" "$tool" "$r"
    done
  done
done
fi

# ------------------------------------------------------------- the report
elapsed=$(($(date +%s) - started))
args="--duration $duration --repeats $repeats --rounds $rounds --levels \"$levels\" --churn-levels \"$churn_levels\""
[ "$smoke" = 1 ] && args="--smoke"
[ "$only" = "paths rates latency churn node" ] || args+=" --only \"$only\""
helper report --raw "$raw" --commands "$work/commands.txt" --facts "$work/facts-start.tsv" \
  --facts-end "$work/facts-end.tsv" --out "$out" --duration "$duration" --repeats "$repeats" \
  --levels "$levels" --churn-levels "$churn_levels" --sections "$only" --rounds "$rounds" --low-rates "$low_rates" --fill-keys "$fill_keys" --elapsed "$elapsed" --invocation "benches/compare.sh $args" \
  --work "$work"
progress "done: $out/RESULTS.md and $out/plots/"
echo "$out"
