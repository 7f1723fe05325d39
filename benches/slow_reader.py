#!/usr/bin/env python3
"""A client that stops reading (issue 20): RSS, the other clients' latency, and
whether the slow reader gets every value right.

    benches/slow_reader.py [--memgate PATH] [--memcached PATH] [--target sidecar|memcached|both]
                           [--before S] [--stall S] [--clients N] [--server-cpus L] [--client-cpus L]
                           [--rss-csv PREFIX]

For each target, a fresh server side:
  sidecar    three `memgate node` processes (TLS and login, as `memgate up`
             runs them) behind `memgate proxy` with its default settings;
  memcached  one plain `memcached -m 1024`, for comparison.

Then:
1. 50 keys are written with 500 KB values, each key's bytes its own;
2. N clients (separate processes) loop `set` then `get` of their own small
   keys, one request at a time, each reply timed and checked (a reply later
   than 1 s is a timeout: the client reconnects);
3. after --before seconds, one more client sends `get` of the 50 big keys 20
   times in one write (about 500 MB of replies) and reads nothing for
   --stall seconds;
4. then it reads everything and checks every value, in order.

The server's VmRSS (/proc/PID/status; for the sidecar, also the sum of the
nodes') is sampled every 100 ms. Prints one Markdown table per target.
Servers are pinned to --server-cpus and the clients to --client-cpus
(taskset / sched_setaffinity). Figures: benches/SOAK.md.
"""

import argparse
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER, PASSWORD = "slow", "slow-password-123"
BIG_KEYS, BIG_VALUE, REPEATS = 50, 500_000, 20
SMALL_VALUE = 100
CLIENT_TIMEOUT = 1.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} never opened")


def big_key(i):
    return b"slow:big:%d" % i


def big_value(i):
    """500 KB that belong to key i alone: a wrong key's value, a shifted or
    truncated one all compare unequal."""
    unit = b"<%d>" % i
    return (unit * (BIG_VALUE // len(unit) + 1))[:BIG_VALUE]


class Reader:
    """Buffered reads of lines and exact lengths from a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0

    def _fill(self):
        if self.pos > 1 << 20:
            del self.buf[: self.pos]
            self.pos = 0
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buf += chunk

    def line(self):
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line = bytes(self.buf[self.pos : end])
                self.pos = end + 2
                return line
            self._fill()

    def exact(self, n):
        while len(self.buf) - self.pos < n:
            self._fill()
        data = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return data


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def small_client(index, port, stop, out):
    """set then get of this client's own keys until `stop`; sends back
    (send time, latency or None for an error, kind) per request."""
    records, seq = [], 0
    sock = reader = None
    while not stop.is_set():
        if sock is None:
            try:
                sock = connect(port)
            except OSError:
                records.append((time.monotonic(), None, "error"))
                time.sleep(0.1)
                continue
            sock.settimeout(CLIENT_TIMEOUT)
            reader = Reader(sock)
        key = b"slow:small:%d:%d" % (index, seq % 100)
        value = (b"%d:%d:" % (index, seq)).ljust(SMALL_VALUE, b"x")
        for request, check in (
            (b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value), "set"),
            (b"get %s\r\n" % key, "get"),
        ):
            began = time.monotonic()
            try:
                sock.sendall(request)
                line = reader.line()
                ok = line == b"STORED" if check == "set" else line.startswith(b"VALUE ")
                if ok and check == "get":
                    got = reader.exact(int(line.split(b" ")[3]) + 2)[:-2]
                    ok = reader.line() == b"END" and got == value
                records.append((began, time.monotonic() - began if ok else None, "ok" if ok else "error"))
            except socket.timeout:
                records.append((began, None, "timeout"))
                sock.close()
                sock = None
                break
            except (ConnectionError, OSError):
                records.append((began, None, "error"))
                sock.close()
                sock = None
                break
        seq += 1
    out.send(records)


def slow_reader(port, flood_at, stall, log):
    """The client that stops reading: 20 pipelined gets of the 50 big keys,
    nothing read for `stall` seconds, then every value checked."""
    sock = connect(port)
    request = b"get " + b" ".join(big_key(i) for i in range(BIG_KEYS)) + b"\r\n"
    while time.monotonic() < flood_at:
        time.sleep(0.01)
    sock.sendall(request * REPEATS)
    log["flood"] = time.monotonic()
    time.sleep(stall)
    log["read"] = time.monotonic()
    reader = Reader(sock)
    right = wrong = missing = errors = 0
    for _ in range(REPEATS):
        wanted = 0  # the index of the next key this reply may carry: keys come in request order
        while True:
            line = reader.line()
            if line == b"END":
                break
            if not line.startswith(b"VALUE "):  # an error line ends the reply
                errors += 1
                break
            _, key, _, length = line.split(b" ")[:4]
            value = reader.exact(int(length) + 2)[:-2]
            index = next((i for i in range(wanted, BIG_KEYS) if big_key(i) == key), None)
            if index is None or value != big_value(index):
                wrong += 1
                continue
            missing += index - wanted
            right += 1
            wanted = index + 1
        missing += BIG_KEYS - wanted
    log["done"] = time.monotonic()
    log.update(right=right, wrong=wrong, missing=missing, errors=errors)
    sock.close()


def vm_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def run(target, args, work, procs):
    env = dict(os.environ, MEMGATE_LOG="warn")
    log_file = open(os.path.join(work, f"{target}.log"), "a")

    def start(cmd):
        p = subprocess.Popen(["taskset", "-c", args.server_cpus, *cmd], stdout=subprocess.DEVNULL,
                             stderr=log_file, env=env)
        procs.append(p)
        return p

    metrics = None
    nodes = []
    if target == "memcached":
        port = free_port()
        server = start([args.memcached, "-p", str(port), "-l", "127.0.0.1", "-U", "0", "-m", "1024", "-u", "root"])
        wait_port(port)
    else:
        memgate = args.memgate
        subprocess.run([memgate, "certs", "--out", f"{work}/pki", "--node", "localhost"], check=True,
                       capture_output=True)
        with open(f"{work}/caches.toml", "w") as f:
            f.write(f'[[cache]]\nid = "slow"\nmemory_limit = "256MiB"\n[[cache.credential]]\n'
                    f'username = "{USER}"\npassword = "{PASSWORD}"\nprimary = true\n')
        entries = []
        for i in range(3):
            node_port = free_port()
            nodes.append(start([memgate, "node", "--memory-limit", "256MiB", "--listen", "none",
                                "--tls-listen", f"127.0.0.1:{node_port}", "--caches", f"{work}/caches.toml",
                                "--cert", f"{work}/pki/localhost.crt", "--key", f"{work}/pki/localhost.key"]))
            wait_port(node_port)
            entries.append(f"n{i + 1}=127.0.0.1:{node_port}")
        port, metrics = free_port(), free_port()
        with open(f"{work}/proxy.toml", "w") as f:
            f.write(f'listen = "127.0.0.1:{port}"\nservers = "{",".join(entries)}"\n'
                    f'ca = "{work}/pki/ca.crt"\nserver_name = "localhost"\n'
                    f'username = "{USER}"\npassword = "{PASSWORD}"\nmetrics_listen = "127.0.0.1:{metrics}"\n')
        server = start([memgate, "proxy", "--config", f"{work}/proxy.toml"])
        wait_port(port)

    sock = connect(port)
    reader = Reader(sock)
    for i in range(BIG_KEYS):
        sock.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (big_key(i), BIG_VALUE, big_value(i)))
        if reader.line() != b"STORED":
            sys.exit(f"{target}: writing {big_key(i)!r} failed")
    sock.close()

    samples = []  # (time, server KiB, nodes KiB)
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            samples.append((time.monotonic(), vm_rss_kib(server.pid), sum(vm_rss_kib(n.pid) for n in nodes)))
            time.sleep(0.1)

    stop = multiprocessing.Event()
    pipes, clients = [], []
    for index in range(args.clients):  # forked before the sampler thread starts
        mine, theirs = multiprocessing.Pipe(duplex=False)
        p = multiprocessing.Process(target=small_client, args=(index, port, stop, theirs))
        p.start()
        pipes.append(mine)
        clients.append(p)
    sampler = threading.Thread(target=sample)
    sampler.start()
    began = time.monotonic()
    log = {}
    slow_reader(port, began + args.before, args.stall, log)
    time.sleep(1.0)  # the clients and the RSS after the reader drained
    stop.set()
    records = [r for pipe in pipes for r in pipe.recv()]
    for p in clients:
        p.join()
    sampling.set()
    sampler.join()

    counters = ""
    if metrics:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read().decode()
        wanted = ("timeout", "unreachable", "error", "down", "paused", "buffer")
        counters = "; ".join(
            line for line in text.splitlines()
            if not line.startswith("#") and any(w in line.split("{")[0].split(" ")[0] for w in wanted)
            and not line.rstrip().endswith(" 0")
        )
    server.terminate()
    for n in nodes:
        n.terminate()

    flood, read, done = log["flood"], log["read"], log["done"]
    if args.rss_csv:
        with open(f"{args.rss_csv}.{target}.csv", "w") as f:
            f.write("seconds_from_flood,server_rss_kib,nodes_rss_kib\n")
            f.writelines(f"{t - flood:.2f},{a},{b}\n" for t, a, b in samples)
    windows = [("before the flood", began, flood), (f"stall ({args.stall:g} s)", flood, read),
               ("slow reader reading", read, done)]
    print(f"\n### {target}\n")
    print(f"Slow reader: {log['right']} of {REPEATS * BIG_KEYS} values right, {log['wrong']} wrong, "
          f"{log['missing']} missing, {log['errors']} error replies; read {REPEATS * BIG_KEYS * BIG_VALUE / 1e6:.0f} MB in {done - read:.1f} s.\n")
    gap = max(b[0] - a[0] for a, b in zip(samples, samples[1:]))
    print(f"Longest gap between RSS samples (due every 100 ms): {gap * 1000:.0f} ms.\n")
    before = [s for s in samples if s[0] < flood]
    during = [s for s in samples if flood <= s[0] < read]
    after = [s for s in samples if s[0] >= done]
    mib = 1024.0
    print("| RSS (MiB) | before | peak during the stall | growth | peak while read | after |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    reading = [s for s in samples if read <= s[0] < done] or after
    for name, column in (("server" if target == "memcached" else "sidecar", 1), ("3 nodes (sum)", 2)):
        if column == 2 and not nodes:
            continue
        peak = max(s[column] for s in during)
        print(f"| {name} | {before[-1][column] / mib:.1f} | {peak / mib:.1f} "
              f"| {(peak - before[-1][column]) / mib:+.1f} "
              f"| {max(s[column] for s in reading) / mib:.1f} | {after[-1][column] / mib:.1f} |")
    print(f"\nOther clients ({args.clients}, set/get of {SMALL_VALUE}-byte values, one in flight each):\n")
    print("| window | requests | p50 µs | p99 µs | max µs | errors | timeouts |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, lo, hi in windows:
        inside = [r for r in records if lo <= r[0] < hi]
        lat = sorted(r[1] * 1e6 for r in inside if r[1] is not None)
        errors = sum(1 for r in inside if r[2] == "error")
        timeouts = sum(1 for r in inside if r[2] == "timeout")
        print(f"| {name} | {len(inside):,} | {percentile(lat, 0.5):,.0f} | {percentile(lat, 0.99):,.0f} "
              f"| {lat[-1] if lat else float('nan'):,.0f} | {errors} | {timeouts} |")
    if metrics:
        print(f"\nSidecar counters not at 0 among timeouts, errors, unreachable, down: {counters or 'none'}")
    return log["wrong"] == 0 and log["missing"] == 0 and log["errors"] == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memgate", default=os.path.join(REPO, "target/release/memgate"))
    parser.add_argument("--memcached", default="memcached")
    parser.add_argument("--target", choices=["sidecar", "memcached", "both"], default="both")
    parser.add_argument("--before", type=float, default=10)
    parser.add_argument("--stall", type=float, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--client-cpus", default="1")
    parser.add_argument("--rss-csv", help="also write the RSS samples to PREFIX.TARGET.csv")
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    work = tempfile.mkdtemp()
    procs = []
    good = True
    try:
        targets = ["sidecar", "memcached"] if args.target == "both" else [args.target]
        for target in targets:
            good = run(target, args, work, procs) and good
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        subprocess.run(["rm", "-rf", work])
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
