#!/usr/bin/env bash
# memgate bench --check against memcached and twemproxy, side by side
# (issue 20, part 3): the same consistency check pointed at each endpoint,
# in each dialect the endpoint speaks, and a markdown table of the counts.
#
# Everything runs on loopback, on free ports, in a temp dir, and is killed
# on exit:
#   memcached           one memcached 1.6 (-t 2, 64 MiB): text, binary, meta;
#   twemproxy           nutcracker (ketama, md5) over three memcached: text
#                       only (it speaks neither binary nor meta), its stats
#                       read from the three memcached (--check-stats), since
#                       twemproxy answers no `stats` on its client port;
#   memgate-sidecar     this build's `memgate proxy` over three memgate nodes
#                       (TLS + login, default settings), started just before
#                       its runs: text, binary, meta (its stats are the
#                       sidecar's own `stats` answer).
# Each row: a plain check, then quiet requests with 4-key gets (binary
# GETKQ…NOOP, meta `mg q`…`mn`, text `get k1..k4`, across the three
# servers behind twemproxy), then every connection on every key (shared).
#
# Usage: benches/check.sh [--duration S] [--connections N] [--pipeline N]
#                         [--memgate PATH] [--out DIR]
# Needs: memcached, nutcracker, python3.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

duration=10 connections=8 pipeline=16 bin="" out=""
while [ $# -gt 0 ]; do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --pipeline) pipeline=$2; shift 2 ;;
    --memgate) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--duration S] [--connections N] [--pipeline N] [--memgate PATH] [--out DIR]" >&2; exit 64 ;;
  esac
done
# shellcheck source=benches/lib.sh
source "$repo/benches/lib.sh"
bin=$(release_memgate "$bin")
work=$(mktemp -d)
out=${out:-$work}
mkdir -p "$out"
pids=()
trap cleanup EXIT


direct=$(free_port); bg memcached -p "$direct" -l 127.0.0.1 -U 0 -m 64 -t 2 -u root; wait_port "$direct"
backends=()
for _ in 1 2 3; do
  p=$(free_port); backends+=("$p"); bg memcached -p "$p" -l 127.0.0.1 -U 0 -m 64 -t 1 -u root; wait_port "$p"
done
tw=$(free_port)
{
  printf 'check:\n  listen: 127.0.0.1:%s\n  hash: md5\n  distribution: ketama\n  timeout: 1000\n  servers:\n' "$tw"
  for p in "${backends[@]}"; do printf '    - 127.0.0.1:%s:1\n' "$p"; done
} > "$work/nutcracker.yml"
bg nutcracker -c "$work/nutcracker.yml" -s "$(free_port)" -a 127.0.0.1 -o "$work/nutcracker.log"
wait_port "$tw"
tw_stats=$(printf '127.0.0.1:%s,' "${backends[@]}"); tw_stats=${tw_stats%,}

# The memgate sidecar over three memgate nodes, as `memgate up` runs them.
"$bin" certs --out "$work/pki" --node localhost >/dev/null
user=check pass=check-password-123
cache_toml check 64MiB "$user" password "$pass" > "$work/caches.toml"
export MEMGATE_LOG=warn
servers=""
for i in 1 2 3; do
  p=$(free_port)
  bg "$bin" node --memory-limit 64MiB --listen none --tls-listen 127.0.0.1:"$p" --caches "$work/caches.toml" \
    --cert "$work/pki/localhost.crt" --key "$work/pki/localhost.key"
  wait_port "$p"
  servers+="${servers:+,}n$i=127.0.0.1:$p"
done
start_sidecar() { # sets $sidecar: a fresh sidecar for each run, so each sees its start-up
  sidecar=$(free_port)
  bg "$bin" proxy --listen 127.0.0.1:"$sidecar" --servers "$servers" --ca "$work/pki/ca.crt" \
    --server-name localhost --username "$user" --password "$pass" --metrics-listen none
  wait_port "$sidecar"
}

status=0
run() { # name port protocol [extra flags...]
  local name=$1 port=$2 protocol=$3; shift 3
  echo "check.sh: $name" >&2
  "$bin" bench --server 127.0.0.1:"$port" --protocol "$protocol" --check --json \
    --duration "${duration}s" --connections "$connections" --pipeline "$pipeline" \
    --key-space 10000 --ratio 1:1 --value-size 100 "$@" > "$out/$name.json" 2>>"$work/bench.log" || status=1
}
for protocol in text binary meta; do
  run "memcached-$protocol" "$direct" "$protocol"
  run "memcached-$protocol-quiet-mget4" "$direct" "$protocol" --check-quiet --check-multiget 4
  run "memcached-$protocol-shared" "$direct" "$protocol" --check-keys shared --check-quiet --check-multiget 4
done
run twemproxy-text "$tw" text --check-stats "$tw_stats"
run twemproxy-text-mget4 "$tw" text --check-multiget 4 --check-stats "$tw_stats"
run twemproxy-text-shared "$tw" text --check-keys shared --check-multiget 4 --check-stats "$tw_stats"
for protocol in text binary meta; do
  start_sidecar; run "memgate-sidecar-$protocol" "$sidecar" "$protocol"
  start_sidecar; run "memgate-sidecar-$protocol-quiet-mget4" "$sidecar" "$protocol" --check-quiet --check-multiget 4
done

python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
kinds = ["stale", "foreign", "lost", "corrupt", "out_of_order"]
print("| run | ops/s | reads verified | writes acked | " + " | ".join(kinds) + " | errors | timeouts | misses explained by |")
print("|---|---:|---:|---:|" + "---:|" * len(kinds) + "---:|---:|---|")
for path in sorted(out.glob("*.json")):
    r = json.loads(path.read_text())
    c = r["check"]
    print(f"| {path.stem} | {r['ops_per_sec']:,.0f} | {c['verified']:,} | {c['writes_acked']:,} | "
          + " | ".join(str(c[k]) for k in kinds)
          + f" | {c['errors']} | {c['timeouts']} | {c['misses_explained_by'] or '-'} |")
PY
exit $status
