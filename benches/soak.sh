#!/usr/bin/env bash
# Soak of the session guarantees (docs/proxy.md, "Session guarantees"):
# `memgate bench --check` through the sidecar over three memgate nodes (TLS
# and login, as `memgate up` runs them) for a while per fault, every reply
# judged (docs/bench-check.md). Phases:
#   steady     nothing happens;
#   stop       node n2 is stopped (SIGSTOP) for 2 s every 6 s;
#   kill       node n1 is killed (SIGKILL) and restarted empty on its port
#              every 10 s (n1: the sidecar's `stats` take pid and uptime from
#              its first node, so the checker sees the restart);
#   reload     the sidecar is reloaded (SIGHUP, same servers) every 2 s.
# Gets are of one key (a multi-key get reads a down node's keys as misses
# by design, which the checker cannot tell from lost writes).
#
# Usage: benches/soak.sh [--seconds S per phase, default 60] [--protocol P]
#                        [--memgate PATH] [--replicas N]
# --replicas N runs the sidecar with `replicas = N` (docs/proxy.md,
# "Replicas"): a stopped or killed node should then cost no error and no miss.
# Prints one line per phase, and exits 1 if any phase saw a violation.
# Figures: benches/SOAK.md. Needs python3.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
seconds=60 protocol=text bin="" replicas=1
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --protocol) protocol=$2; shift 2 ;;
    --memgate) bin=$2; shift 2 ;;
    --replicas) replicas=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds S] [--protocol text|binary|meta] [--memgate PATH] [--replicas N]" >&2; exit 64 ;;
  esac
done
# shellcheck source=benches/lib.sh
source "$repo/benches/lib.sh"
bin=$(release_memgate "$bin")
work=$(mktemp -d)
pids=()
trap cleanup EXIT

"$bin" certs --out "$work/pki" --node localhost >/dev/null
user=soak pass=soak-password-123
cache_toml soak 256MiB "$user" password "$pass" > "$work/caches.toml"
export MEMGATE_LOG=warn
ports=() node_pids=()
start_node() { # index port
  bg "$bin" node --memory-limit 256MiB --listen none --tls-listen 127.0.0.1:"$2" \
    --caches "$work/caches.toml" --cert "$work/pki/localhost.crt" --key "$work/pki/localhost.key"
  node_pids[$1]=$pid
  wait_port "$2"
}
servers=""
for i in 0 1 2; do
  ports[i]=$(free_port); start_node "$i" "${ports[i]}"
  servers+="${servers:+,}n$((i + 1))=127.0.0.1:${ports[i]}"
done
sidecar=$(free_port)
cat > "$work/proxy.toml" <<TOML
listen = "127.0.0.1:$sidecar"
servers = "$servers"
ca = "$work/pki/ca.crt"
server_name = "localhost"
username = "$user"
password = "$pass"
metrics_listen = "none"
replicas = $replicas
TOML
bg "$bin" proxy --config "$work/proxy.toml"
proxy_pid=$pid
wait_port "$sidecar"

fault() { # phase: the fault, in a loop until killed
  case $1 in
    steady) sleep infinity ;;
    stop) while sleep 4; do kill -STOP "${node_pids[1]}"; sleep 2; kill -CONT "${node_pids[1]}"; done ;;
    kill) while sleep 10; do
            kill -KILL "${node_pids[0]}"; wait "${node_pids[0]}" 2>/dev/null || true
            sleep 1; start_node 0 "${ports[0]}"
            echo "${node_pids[0]}" > "$work/node0.pid"   # for the cleanup
          done ;;
    reload) while sleep 2; do kill -HUP "$proxy_pid"; done ;;
  esac
}

echo "| phase | reads verified | writes acked | stale | foreign | lost | corrupt | out_of_order | errors | timeouts | misses after ack | explained by |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
status=0
for phase in steady stop kill reload; do
  fault "$phase" & faulting=$!
  set +e
  "$bin" bench --server 127.0.0.1:"$sidecar" --check --json --protocol "$protocol" \
    --connections 8 --pipeline 8 --key-space 20000 --timeout 5s --duration "${seconds}s" \
    > "$work/$phase.json" 2>>"$work/bench.log"
  code=$?
  set -e
  kill "$faulting" 2>/dev/null || true; wait "$faulting" 2>/dev/null || true
  kill -CONT "${node_pids[1]}" 2>/dev/null || true
  if [ -f "$work/node0.pid" ]; then pids+=("$(cat "$work/node0.pid")"); fi
  [ "$code" = 0 ] || status=1
  python3 - "$phase" "$work/$phase.json" <<'PY'
import json, sys
phase, path = sys.argv[1], sys.argv[2]
try:
    check = json.load(open(path))["check"]
except Exception as e:
    print(f"{phase}: no report ({e})"); sys.exit(0)
kinds = ("stale", "foreign", "lost", "corrupt", "out_of_order")
print(f"| {phase} | {check['verified']:,} | {check['writes_acked']:,} | "
      + " | ".join(str(check[k]) for k in kinds)
      + f" | {check['errors']:,} | {check['timeouts']:,} | {check['misses_after_ack']:,} "
      + f"| {check['misses_explained_by'] or '-'} |")
PY
done
exit $status
