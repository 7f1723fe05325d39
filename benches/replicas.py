#!/usr/bin/env python3
"""The hit ratio through node faults, with and without replicas.

    benches/replicas.py [--memgate PATH] [--keys N] [--seconds-per-event S]
                        [--batches-per-second R] [--out DIR]

Starts three `memgate node` processes (TLS and login, as `memgate up` runs
them) and, for each of `--replicas 2` and `--replicas 1`, fresh nodes and a
fresh sidecar over them (`--warmup-settle 2s`, `--timeout 1s`,
`--down-retry-delay 1s`). Then:

1. writes every key once (N keys, 100-byte values, no TTL) through the
   sidecar;
2. runs cache-aside traffic through it: Zipf 0.99 over the keys, gets in
   pipelined multi-key batches of 100 (R batches a second at most, so that
   a shared machine keeps some CPU), a `set` for each miss (the app
   refilling from its database), and every 10th batch 20 random keys
   overwritten with a new version. Every value carries its key's version,
   and every hit must be the latest version written (one that is not is
   counted as wrong, and refilled);
3. S seconds apart: `kill -9` node 2, restart it empty on the same port,
   SIGSTOP node 3, SIGCONT it; then S more seconds;
4. right after the kill, the restart and the SIGCONT, reads every key once
   and counts the misses (every key was written).

Prints Markdown tables of the per-event misses and of each run's totals,
and writes the hit ratio per second of both runs to DIR/replicas.csv and a
chart to DIR/replicas_hit_ratio.svg. Exits 1 if `--replicas 2` read a
wrong value or got an error; `--replicas 1` is expected to do both (a node
that is down fails its writes, and an overwrite it missed is read stale
once it continues).
"""

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from warmup import free_port, wait_port, write_chart, zipf_sampler  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER, PASSWORD = "rep", "rep-password-123"
EVENTS = ["kill -9 n2", "restart n2 empty", "SIGSTOP n3", "SIGCONT n3"]
READ_ALL_AFTER = {0, 1, 3}  # the events after which every key is read


def value(version):
    return b"%010d" % version + b"v" * 90  # 100 bytes






class Text:
    """A pipelining text-protocol client that checks every value's version."""

    def __init__(self, port, versions):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""
        self.versions = versions  # key -> latest version written
        self.wrong = self.errors = self.failed_gets = 0

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                sys.exit("the sidecar closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n:
            self.buf += self.sock.recv(1 << 16)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def get_many(self, keys):
        """The keys that hit with the latest version; empty on an error.

        A value of another version is counted as wrong and is no hit, so the
        caller refills it: each one is counted about once."""
        self.sock.sendall(b"get " + b" ".join(keys) + b"\r\n")
        hits = set()
        while True:
            line = self.line()
            if line == b"END":
                return hits
            if not line.startswith(b"VALUE "):
                self.errors += 1
                self.failed_gets += 1
                print(f"get: {line!r}", file=sys.stderr)
                return set()
            _, key, _, length = line.split(b" ")[:4]
            got = self.exact(int(length) + 2)[:-2]
            if got != value(self.versions[key]):
                self.wrong += 1
                if self.wrong <= 5:
                    print(f"wrong value for {key!r}: version {got[:10]!r},"
                          f" latest written {self.versions[key]}", file=sys.stderr)
            else:
                hits.add(key)

    def set_many(self, keys):
        out = b"".join(b"set %s 0 0 100\r\n%s\r\n" % (k, value(self.versions[k])) for k in keys)
        self.sock.sendall(out)
        for _ in keys:
            if self.line() != b"STORED":
                self.errors += 1




def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memgate", default=os.path.join(REPO, "target/release/memgate"))
    parser.add_argument("--keys", type=int, default=30_000)
    parser.add_argument("--seconds-per-event", type=float, default=20)
    parser.add_argument("--batches-per-second", type=float, default=200)
    parser.add_argument("--out", default=os.path.join(REPO, "benches/plots"))
    args = parser.parse_args()
    memgate = args.memgate
    work = tempfile.mkdtemp()
    procs = []
    env = dict(os.environ, MEMGATE_LOG="warn")

    def start(cmd):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "log"), "a"), env=env)
        procs.append(p)
        return p

    try:
        subprocess.run([memgate, "certs", "--out", f"{work}/pki", "--node", "localhost"], check=True, capture_output=True)
        with open(f"{work}/caches.toml", "w") as f:
            f.write(f'[[cache]]\nid = "rep"\nmemory_limit = "64MiB"\n[[cache.credential]]\n'
                    f'username = "{USER}"\npassword = "{PASSWORD}"\nprimary = true\n')
        ports = [free_port() for _ in range(3)]
        servers = ",".join(f"n{i + 1}=127.0.0.1:{port}" for i, port in enumerate(ports))
        keys = [b"rep:%d" % i for i in range(args.keys)]
        S = args.seconds_per_event

        series, table, totals = {}, [], []
        for replicas in [2, 1]:
            commands = [[memgate, "node", "--memory-limit", "64MiB", "--listen", "none",
                         "--tls-listen", f"127.0.0.1:{port}", "--caches", f"{work}/caches.toml",
                         "--cert", f"{work}/pki/localhost.crt", "--key", f"{work}/pki/localhost.key"]
                        for port in ports]
            nodes = []  # fresh, empty nodes for each run
            for command, port in zip(commands, ports):
                nodes.append(start(command))
                wait_port(port)
            port = free_port()
            config = f"{work}/proxy-{replicas}.toml"
            with open(config, "w") as f:
                f.write(f'listen = "127.0.0.1:{port}"\nservers = "{servers}"\n'
                        f'ca = "{work}/pki/ca.crt"\nserver_name = "localhost"\n'
                        f'username = "{USER}"\npassword = "{PASSWORD}"\nmetrics_listen = "none"\n'
                        f'replicas = {replicas}\nwarmup_settle = "2s"\ntimeout = "1s"\n'
                        f'down_retry_delay = "1s"\n')
            sidecar = start([memgate, "proxy", "--config", config])
            wait_port(port)
            versions = dict.fromkeys(keys, 0)
            client = Text(port, versions)
            for i in range(0, len(keys), 500):
                client.set_many(keys[i : i + 500])
            rng = random.Random(7)
            draw = zipf_sampler(len(keys), 0.99, rng)
            per_second = []  # (second, gets, hits)
            began = time.monotonic()
            next_event = batches = 0
            bucket = [0, 0]
            second = 0
            next_batch = began
            while True:
                time.sleep(max(0.0, next_batch - time.monotonic()))
                now = time.monotonic() - began
                if int(now) > second:
                    per_second.append((second, bucket[0], bucket[1]))
                    bucket, second = [0, 0], int(now)
                if now >= S * (len(EVENTS) + 1):
                    break
                if next_event < len(EVENTS) and now >= S * (next_event + 1):
                    if next_event == 0:
                        nodes[1].kill()
                        nodes[1].wait()
                    elif next_event == 1:
                        nodes[1] = start(commands[1])  # same port, empty
                        wait_port(ports[1])
                    elif next_event == 2:
                        nodes[2].send_signal(signal.SIGSTOP)
                    else:
                        nodes[2].send_signal(signal.SIGCONT)
                    if next_event in READ_ALL_AFTER:
                        time.sleep(0.3)
                        hit, wrong = 0, client.wrong
                        for i in range(0, len(keys), 100):
                            hit += len(client.get_many(keys[i : i + 100]))
                        wrong = client.wrong - wrong
                        table.append((replicas, EVENTS[next_event], len(keys), len(keys) - hit - wrong, wrong))
                    next_event += 1
                    continue
                batch = [keys[draw()] for _ in range(100)]
                hits = client.get_many(batch)
                misses = [k for k in set(batch) if k not in hits]
                if misses:
                    client.set_many(misses)
                batches += 1
                next_batch = max(next_batch + 1 / args.batches_per_second, time.monotonic())
                if batches % 10 == 0:
                    overwrite = [keys[i] for i in rng.sample(range(len(keys)), 20)]
                    for k in overwrite:
                        versions[k] += 1  # the database first, then the cache
                    client.set_many(overwrite)
                bucket[0] += len(batch)
                bucket[1] += sum(1 for k in batch if k in hits)
            series[replicas] = per_second
            gets = sum(g for _, g, _ in per_second)
            hits = sum(h for _, _, h in per_second)
            totals.append((replicas, gets, hits, client.wrong, client.errors, client.failed_gets))
            for p in [sidecar, *nodes]:
                p.send_signal(signal.SIGCONT)
                p.terminate()
                p.wait()

        print("| --replicas | event | keys read | missed right after | share | wrong values read |")
        print("| ---: | --- | ---: | ---: | ---: | ---: |")
        for replicas, event, read, missed, wrong in table:
            print(f"| {replicas} | {event} | {read} | {missed} | {missed / max(read, 1):.1%} | {wrong} |")
        print()
        print("| --replicas | gets | hits | hit ratio | wrong values | errors | failed gets |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for replicas, gets, hits, wrong, errors, failed in totals:
            print(f"| {replicas} | {gets} | {hits} | {hits / max(gets, 1):.4f} | {wrong} | {errors} | {failed} |")
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "replicas.csv"), "w") as f:
            f.write("second,replicas_1_hit_ratio,replicas_2_hit_ratio\n")
            for a, b in zip(series[1], series[2]):
                ratio = lambda s: f"{s[2] / s[1]:.4f}" if s[1] else ""
                f.write(f"{a[0]},{ratio(a)},{ratio(b)}\n")
        runs = {2: ("#1f77b4", "--replicas 2"), 1: ("#d62728", "--replicas 1")}
        write_chart(os.path.join(args.out, "replicas_hit_ratio.svg"), series,
                    [S * (i + 1) for i in range(len(EVENTS))], EVENTS, runs)
        if any(wrong or errors for replicas, _, _, wrong, errors, _ in totals if replicas > 1):
            sys.exit("--replicas 2 read a wrong value or got an error")
    finally:
        for p in procs:
            p.send_signal(signal.SIGCONT)
            p.terminate()
        for p in procs:
            p.wait()



if __name__ == "__main__":
    main()
