#!/usr/bin/env python3
"""The node's store against memcached 1.6.18, side by side (issue 22).

    benches/store.py items  [--memgate PATH] [--limit-mib 64] [--out FILE]
    benches/store.py misses [--memgate PATH] [--limit-mib 16] [--requests N] [--out FILE]

Each measurement starts a fresh memcached (`-m LIMIT -t 4 -U 0`) and a fresh
`memgate node --memory-limit LIMIT --insecure-no-auth` on loopback ports of
their own, drives both with the same requests from this script (plain text
protocol, pipelined), and stops them.

items:  fills each server with more items than it holds (32-byte keys;
        100-byte values, then 1000-byte values), `set ... noreply` in batches
        of 1000 closed by `mn`, then reads `curr_items` from `stats` and the
        server's VmRSS. Prints items, the ratio memgate/memcached, and RSS
        against the limit.
misses: cache-aside traffic: Zipf 0.99 over 400,000 keys (32-byte keys,
        values 100-1000 bytes, a fixed size per key), gets in pipelined
        batches of 100 and a `set noreply` for each miss. "zipf" is that
        alone; "zipf+scans" inserts, after every 20,000 requests, a scan of
        2,000 keys never seen before and never read again (about 9% of the
        requests). The first quarter of the trace warms the cache; the miss
        ratio is over the rest. Both servers see the same trace (fixed seed).

Writes a Markdown table to stdout (and --out).
"""

import argparse
import bisect
import os
import random
import re
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc):
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"server exited: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} never opened")


def start(kind, memgate, limit_mib):
    port = free_port()
    if kind == "memcached":
        args = ["memcached", "-p", str(port), "-l", "127.0.0.1", "-U", "0",
                "-m", str(limit_mib), "-t", "4", "-u", "root"]
    else:
        args = [memgate, "node", "--memory-limit", f"{limit_mib}MiB",
                "--insecure-no-auth", "--listen", f"127.0.0.1:{port}"]
    env = dict(os.environ, MEMGATE_LOG="warn")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_port(port, proc)
    return proc, port


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.r = self.sock.makefile("rb", buffering=1 << 20)

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        line = self.r.readline()
        if not line:
            sys.exit("connection closed")
        return line

    def sync(self):
        """Send `mn` and read up to its MN: every reply before it is an
        error (the sets were noreply)."""
        self.send(b"mn\r\n")
        while True:
            line = self.line()
            if line == b"MN\r\n":
                return
            sys.exit(f"unexpected reply {line!r}")

    def stats(self):
        self.send(b"stats\r\n")
        out = {}
        while True:
            line = self.line().decode()
            if line.startswith("END"):
                return out
            m = re.match(r"STAT (\S+) (\S+)", line)
            if m:
                out[m.group(1)] = m.group(2)


def key(i):
    return b"key:%028d" % i  # 32 bytes


def fill(port, n, value_len):
    c = Conn(port)
    value = b"v" * value_len
    batch = []
    for i in range(n):
        batch.append(b"set %s 0 0 %d noreply\r\n%s\r\n" % (key(i), value_len, value))
        if len(batch) == 1000:
            c.send(b"".join(batch))
            batch = []
            c.sync()
    c.send(b"".join(batch))
    c.sync()
    return c


def items(args):
    rows = []
    limit = args.limit_mib << 20
    for value_len, n in [(100, 800_000), (1000, 120_000)]:
        got = {}
        for kind in ["memcached", "memgate"]:
            proc, port = start(kind, args.memgate, args.limit_mib)
            c = fill(port, n, value_len)
            st = c.stats()
            got[kind] = (int(st["curr_items"]), rss_kib(proc.pid))
            stop(proc)
        ratio = got["memgate"][0] / got["memcached"][0]
        for kind in ["memcached", "memgate"]:
            it, rss = got[kind]
            rows.append(f"| {value_len} | {kind} | {it:,} | {limit / it:.1f} | {rss / 1024:.1f} | "
                        f"{(rss * 1024) / limit:.2f}× | {ratio if kind == 'memgate' else 1.0:.2f}× |")
    head = [f"Items held at a {args.limit_mib} MiB limit, 32-byte keys, filled with more than fit.",
            "",
            "| value bytes | server | items | bytes per item | RSS MiB | RSS / limit | items vs memcached |",
            "|---|---|---|---|---|---|---|"]
    return head + rows


class Zipf:
    def __init__(self, n, s):
        acc = 0.0
        self.cdf = []
        for i in range(1, n + 1):
            acc += 1.0 / (i ** s)
            self.cdf.append(acc)
        self.total = acc
        self.n = n

    def sample(self, rng):
        return min(bisect.bisect_left(self.cdf, rng.random() * self.total), self.n - 1)


def trace(n_keys, requests, scans, seed):
    rng = random.Random(seed)
    z = Zipf(n_keys, 0.99)
    # Ranks go to keys in a shuffled order, so popularity is not key order.
    perm = list(range(n_keys))
    rng.shuffle(perm)
    out = []
    one_time = n_keys
    while len(out) < requests:
        for _ in range(20_000):
            out.append(perm[z.sample(rng)])
        if scans:
            out.extend(range(one_time, one_time + 2_000))
            one_time += 2_000
    return out[:requests]


def value_len_of(k):
    # A fixed size per key, 100-1000 bytes, spread by a multiplicative hash.
    return 100 + (k * 2654435761 % 2**32) % 901


def replay(port, tr):
    c = Conn(port)
    warm = len(tr) // 4
    misses = reads = 0
    values = {}
    for start in range(0, len(tr), 100):
        batch = tr[start:start + 100]
        c.send(b"".join(b"get %s\r\n" % key(k) for k in batch))
        missed = []
        for k in batch:
            line = c.line()
            if line.startswith(b"VALUE "):
                n = int(line.split()[3])
                c.r.read(n + 2)
                line = c.line()
            else:
                missed.append(k)
            if line != b"END\r\n":
                sys.exit(f"bad reply {line!r}")
        if start >= warm:
            reads += len(batch)
            misses += len(missed)
        if missed:
            out = []
            for k in missed:
                vl = value_len_of(k)
                v = values.get(vl)
                if v is None:
                    v = values[vl] = b"x" * vl
                out.append(b"set %s 0 0 %d noreply\r\n%s\r\n" % (key(k), vl, v))
            c.send(b"".join(out))
    c.sync()
    st = c.stats()
    return misses / reads, int(st["curr_items"])


def misses(args):
    rows = []
    for name, scans in [("zipf", False), ("zipf+scans", True)]:
        tr = trace(400_000, args.requests, scans, 22)
        got = {}
        for kind in ["memcached", "memgate"]:
            proc, port = start(kind, args.memgate, args.limit_mib)
            got[kind] = replay(port, tr) + (rss_kib(proc.pid),)
            stop(proc)
        base = got["memcached"][0]
        for kind in ["memcached", "memgate"]:
            mr, it, rss = got[kind]
            rows.append(f"| {name} | {kind} | {mr:.4f} | {mr / base:.3f}× | {it:,} | {rss / 1024:.1f} |")
    head = [f"Miss ratio at {args.limit_mib} MiB, cache-aside, Zipf 0.99 over 400,000 keys, "
            f"values 100-1000 bytes, {args.requests:,} gets (the last 75% counted).",
            "",
            "| workload | server | miss ratio | vs memcached | items at end | RSS MiB |",
            "|---|---|---|---|---|---|"]
    return head + rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["items", "misses"])
    p.add_argument("--memgate", default=os.path.join(REPO, "target/release/memgate"))
    p.add_argument("--limit-mib", type=int)
    p.add_argument("--requests", type=int, default=2_000_000)
    p.add_argument("--out")
    args = p.parse_args()
    if args.limit_mib is None:
        args.limit_mib = 64 if args.what == "items" else 16
    lines = items(args) if args.what == "items" else misses(args)
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
