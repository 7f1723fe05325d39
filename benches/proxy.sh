#!/usr/bin/env bash
# Side-by-side benchmark of the sidecar paths, in one run on one machine:
#   memcached direct | twemproxy -> 3 memcached | stunnel -> memcached -Z
#   | memgate proxy -> 3 memcached -S -Z | memgate proxy -> 3 memgate nodes
# 1. steady state: memcaslap, 90% get / 10% set, 100-byte values, 16 connections;
# 2. connection churn: connect, one get, close, repeated (memgate vs stunnel);
# 3. the sidecar's idle RSS and RSS per idle client connection.
# Usage: benches/proxy.sh [seconds-per-run] [runs]   (defaults 10 and 3)
# Needs: memcached, stunnel4, nutcracker, libmemcached-tools, sasl2-bin, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
runs=${2:-3}
cargo build --release -q
bin=$PWD/target/release/memgate
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
bg() { "$@" >/dev/null 2>&1 & pid=$!; pids+=("$pid"); }
rss_kib() { awk '/VmRSS/ {print $2}' /proc/"$1"/status; }

# PKI and credentials.
"$bin" certs --out "$work/pki" --node localhost >/dev/null
user=bench; pass=bench-password-123
cat > "$work/caches.toml" <<TOML
[[cache]]
id = "bench"
memory_limit = "64MiB"
[[cache.credential]]
username = "$user"
password = "$pass"
TOML
echo -n "$pass" | saslpasswd2 -p -a memcached -c -f "$work/sasldb" "$user"
printf 'mech_list: plain\nsasldb_path: %s\n' "$work/sasldb" > "$work/memcached.conf"
tls_opts="ssl_chain_cert=$work/pki/localhost.crt,ssl_key=$work/pki/localhost.key"

# memcached direct (plain) and three plain ones for twemproxy.
direct=$(free_port); bg memcached -p "$direct" -l 127.0.0.1 -U 0 -m 64 -t 4 -u root
plain=(); for i in 1 2 3; do p=$(free_port); plain+=("$p"); bg memcached -p "$p" -l 127.0.0.1 -U 0 -m 64 -t 1 -u root; done
# memcached -Z (for stunnel) and three -S -Z (for memgate proxy).
mz=$(free_port); bg memcached -Z -o "$tls_opts" -p "$mz" -l 127.0.0.1 -U 0 -m 64 -t 4 -u root
szs=(); for i in 1 2 3; do p=$(free_port); szs+=("$p"); SASL_CONF_PATH=$work bg env SASL_CONF_PATH="$work" memcached -S -Z -o "$tls_opts" -p "$p" -l 127.0.0.1 -U 0 -m 64 -t 1 -u root; done
# Three memgate nodes.
nodes=(); for i in 1 2 3; do p=$(free_port); nodes+=("$p"); MEMGATE_LOG=warn bg "$bin" node --listen none --tls-listen 127.0.0.1:"$p" --cert "$work/pki/localhost.crt" --key "$work/pki/localhost.key" --caches "$work/caches.toml" --memory-limit 64MiB; done
for p in "$direct" "${plain[@]}" "$mz" "${szs[@]}" "${nodes[@]}"; do wait_port "$p"; done

# twemproxy (ketama, md5) over the plain three.
tw=$(free_port); twstats=$(free_port)
cat > "$work/nutcracker.yml" <<YML
bench:
  listen: 127.0.0.1:$tw
  hash: md5
  distribution: ketama
  timeout: 1000
  servers:
    - 127.0.0.1:${plain[0]}:1
    - 127.0.0.1:${plain[1]}:1
    - 127.0.0.1:${plain[2]}:1
YML
bg nutcracker -c "$work/nutcracker.yml" -s "$twstats" -a 127.0.0.1 -o "$work/nutcracker.log"
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
# memgate proxy in front of memcached -S -Z and in front of memgate nodes.
pm=$(free_port); pn=$(free_port)
list() { local out="" i=1; for p in "$@"; do out+="${out:+,}n$i=127.0.0.1:$p"; i=$((i+1)); done; echo "$out"; }
MEMGATE_LOG=warn bg "$bin" proxy --listen 127.0.0.1:"$pm" --servers "$(list "${szs[@]}")" --ca "$work/pki/ca.crt" --server-name localhost --username "$user" --password "$pass" --metrics-listen none
MEMGATE_LOG=warn bg "$bin" proxy --listen 127.0.0.1:"$pn" --servers "$(list "${nodes[@]}")" --ca "$work/pki/ca.crt" --server-name localhost --username "$user" --password "$pass" --metrics-listen none
proxy_pid=$pid
for p in "$tw" "$st" "$pm" "$pn"; do wait_port "$p"; done

cat > "$work/mix.cfg" <<'CFG'
key
16 16 1
value
100 100 1
cmd
0 0.1
1 0.9
CFG
tps() { memcaslap -s 127.0.0.1:"$1" -F "$work/mix.cfg" -T 2 -c 16 -t "${secs}s" 2>&1 | awk '/^Run time/ {for (i=1;i<=NF;i++) if ($i=="TPS:") print $(i+1)}' | tail -1; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
minmax() { sort -n | awk 'NR==1{min=$1} {max=$1} END {print min "-" max}'; }

names=("memcached direct" "twemproxy -> 3 memcached" "stunnel -> memcached -Z" "memgate -> 3 memcached -S -Z" "memgate -> 3 memgate nodes")
ports=("$direct" "$tw" "$st" "$pm" "$pn")
declare -A vals
# Interleave the paths so that noise on the shared machine hits all of them.
for _ in $(seq "$runs"); do
  for i in "${!ports[@]}"; do vals[$i]+="$(tps "${ports[$i]}") "; done
done

churn() { # port seconds -> connections per second (connect, get, close)
  python3 - "$1" "$2" <<'PY'
import socket, sys, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
n, end = 0, time.time() + secs
while time.time() < end:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"get churn\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("closed")
        buf += chunk
    s.close()
    n += 1
print(f"{n / secs:.0f}")
PY
}
churn_st=(); churn_mg=()
for _ in $(seq "$runs"); do churn_st+=("$(churn "$st" 5)"); churn_mg+=("$(churn "$pn" 5)"); done

# Idle memory of the sidecar in front of the memgate nodes.
idle_before=$(rss_kib "$proxy_pid")
idle=$(python3 - "$pn" "$proxy_pid" <<'PY'
import socket, sys, time
port, pid = int(sys.argv[1]), sys.argv[2]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
before = rss()
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(2000)]
for c in conns:
    c.sendall(b"version\r\n")
for c in conns:
    c.recv(100)
time.sleep(1)
after = rss()
print(before, after, (after - before) * 1024 // 2000)
PY
)

echo "## Sidecar paths, side by side"
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $(date -u +%F)."
echo "Command: \`benches/proxy.sh $secs $runs\` (memcaslap -T 2 -c 16, 90% get / 10% set, 100-byte values, ${secs}s x $runs runs per path, interleaved)."
echo
echo "| path | ops/s median | min-max | vs direct | vs stunnel | vs twemproxy |"
echo "| --- | ---: | --- | ---: | ---: | ---: |"
d=$(echo "${vals[0]}" | tr ' ' '\n' | grep . | median)
t=$(echo "${vals[1]}" | tr ' ' '\n' | grep . | median)
s=$(echo "${vals[2]}" | tr ' ' '\n' | grep . | median)
for i in "${!ports[@]}"; do
  m=$(echo "${vals[$i]}" | tr ' ' '\n' | grep . | median)
  mm=$(echo "${vals[$i]}" | tr ' ' '\n' | grep . | minmax)
  r() { awk -v a="$m" -v b="$1" 'BEGIN {printf "%.2f", a/b}'; }
  echo "| ${names[$i]} | $m | $mm | $(r "$d") | $(r "$s") | $(r "$t") |"
done
echo
cs=$(printf '%s\n' "${churn_st[@]}" | median); cm=$(printf '%s\n' "${churn_mg[@]}" | median)
echo "| connection churn (connect, get, close) | conn/s median | min-max |"
echo "| --- | ---: | --- |"
echo "| stunnel -> memcached -Z | $cs | $(printf '%s\n' "${churn_st[@]}" | minmax) |"
echo "| memgate -> 3 memgate nodes | $cm | $(printf '%s\n' "${churn_mg[@]}" | minmax) |"
echo
echo "Churn ratio memgate / stunnel: $(awk -v a="$cm" -v b="$cs" 'BEGIN {printf "%.1f", a/b}')x."
read -r before after per <<<"$idle"
echo "Sidecar RSS: $((idle_before / 1024)) MiB after the runs; 2000 idle client connections: $before KiB -> $after KiB, $per bytes each."
