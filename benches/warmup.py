#!/usr/bin/env python3
"""The hit ratio through reloads, with and without the warm-up (issue 21).

    benches/warmup.py [--memgate PATH] [--keys N] [--seconds-per-event S] [--out DIR]

Starts four `memgate node` processes (TLS and login, as `memgate up` runs
them) and, for each of `--warmup 1h` and `--warmup 0`, a fresh sidecar over
the first three. Then:

1. writes every key once (N keys, 100-byte values, no TTL) through the
   sidecar, so that the steady hit ratio is 1;
2. runs cache-aside traffic through it: Zipf 0.99 over the keys, gets in
   pipelined multi-key batches of 100, and a `set` for each miss (the app
   refilling from its database);
3. changes the server list by SIGHUP three times, S seconds apart: add the
   fourth node, remove it again, and remove the second node (each removed
   node keeps running, as an operator retiring one would);
4. right after each reload, reads every key once and counts the misses
   among the keys `memgate route` says moved.

Each run has fresh nodes. Prints a Markdown table of the
per-reload figures, and writes the hit ratio per second of both runs to
DIR/warmup.csv and a chart to DIR/warmup_hit_ratio.svg.
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER, PASSWORD = "warm", "warm-password-123"
VALUE = b"v" * 100


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


class Text:
    """A pipelining text-protocol client."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

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
        """The set of keys that hit; None if the reply was an error."""
        self.sock.sendall(b"get " + b" ".join(keys) + b"\r\n")
        hits = set()
        while True:
            line = self.line()
            if line == b"END":
                return hits
            if not line.startswith(b"VALUE "):
                return None
            _, key, _, length = line.split(b" ")[:4]
            value = self.exact(int(length) + 2)[:-2]
            if value != VALUE:
                sys.exit(f"wrong value for {key!r}")
            hits.add(key)

    def set_many(self, keys):
        out = b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(VALUE), VALUE) for k in keys)
        self.sock.sendall(out)
        for key in keys:
            line = self.line()
            if line != b"STORED":
                sys.exit(f"set {key!r}: {line!r}")

    def call(self, request):
        self.sock.sendall(request)
        return self.line()


def zipf_sampler(n, exponent, rng):
    weights = [1.0 / (i + 1) ** exponent for i in range(n)]
    total = sum(weights)
    cumulative, acc = [], 0.0
    for w in weights:
        acc += w / total
        cumulative.append(acc)
    import bisect

    order = list(range(n))
    rng.shuffle(order)  # popularity is not key order
    return lambda: order[min(bisect.bisect_left(cumulative, rng.random()), n - 1)]


def route(memgate, servers, keys):
    """Which node `memgate route` puts each key on."""
    placed = {}
    for i in range(0, len(keys), 2000):
        chunk = [k.decode() for k in keys[i : i + 2000]]
        out = subprocess.run(
            [memgate, "route", "--servers", servers, *chunk],
            check=True, capture_output=True, text=True,
        ).stdout
        for line in out.splitlines():
            key, node = line.split("\t")
            placed[key.encode()] = node
    return placed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memgate", default=os.path.join(REPO, "target/release/memgate"))
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--seconds-per-event", type=float, default=30)
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
            f.write(f'[[cache]]\nid = "warm"\nmemory_limit = "64MiB"\n[[cache.credential]]\n'
                    f'username = "{USER}"\npassword = "{PASSWORD}"\nprimary = true\n')
        ports = [free_port() for _ in range(4)]
        entries = [f"n{i + 1}=127.0.0.1:{port}" for i, port in enumerate(ports)]
        lists = [entries[:3], entries, entries[:3], [entries[0], entries[2]]]
        events = ["add n4", "remove n4", "remove n2"]
        keys = [b"warm:%d" % i for i in range(args.keys)]
        placements = [route(memgate, ",".join(servers), keys) for servers in lists]

        series, table = {}, []
        for warmup in ["1h", "0"]:
            # Fresh, empty nodes for each run (the first run's copies would
            # otherwise be found by the second).
            nodes = []
            for port in ports:
                nodes.append(start([memgate, "node", "--memory-limit", "64MiB", "--listen", "none",
                                    "--tls-listen", f"127.0.0.1:{port}", "--caches", f"{work}/caches.toml",
                                    "--cert", f"{work}/pki/localhost.crt", "--key", f"{work}/pki/localhost.key"]))
                wait_port(port)
            port = free_port()
            config = f"{work}/proxy-{warmup}.toml"

            def write_config(servers):
                with open(config, "w") as f:
                    f.write(f'listen = "127.0.0.1:{port}"\nservers = "{",".join(servers)}"\n'
                            f'ca = "{work}/pki/ca.crt"\nserver_name = "localhost"\n'
                            f'username = "{USER}"\npassword = "{PASSWORD}"\nmetrics_listen = "none"\n'
                            f'warmup = "{warmup}"\nwarmup_settle = "2s"\n')

            write_config(lists[0])
            sidecar = start([memgate, "proxy", "--config", config])
            wait_port(port)
            client = Text(port)
            for i in range(0, len(keys), 500):
                client.set_many(keys[i : i + 500])
            rng = random.Random(7)
            draw = zipf_sampler(len(keys), 0.99, rng)
            per_second = []  # (second, gets, hits)
            began = time.monotonic()
            next_event = 0
            bucket = [0, 0]
            second = 0
            end = args.seconds_per_event * (len(events) + 1)
            while True:
                now = time.monotonic() - began
                if int(now) > second:
                    per_second.append((second, bucket[0], bucket[1]))
                    bucket, second = [0, 0], int(now)
                if now >= end:
                    break
                if next_event < len(events) and now >= args.seconds_per_event * (next_event + 1):
                    write_config(lists[next_event + 1])
                    sidecar.send_signal(signal.SIGHUP)
                    time.sleep(0.3)  # the reload is read at once; leave it time to log
                    before, after = placements[next_event], placements[next_event + 1]
                    moved = [k for k in keys if before[k] != after[k]]
                    missed = 0
                    for i in range(0, len(moved), 100):
                        hits = client.get_many(moved[i : i + 100])
                        missed += len(moved[i : i + 100]) - len(hits or ())
                    table.append((warmup, events[next_event], len(moved), missed))
                    next_event += 1
                    continue
                batch = [keys[draw()] for _ in range(100)]
                hits = client.get_many(batch)
                if hits is None:
                    sys.exit("a get failed")
                misses = [k for k in set(batch) if k not in hits]
                if misses:
                    client.set_many(misses)
                bucket[0] += len(batch)
                bucket[1] += sum(1 for k in batch if k in hits)
            series[warmup] = per_second
            for p in [sidecar, *nodes]:
                p.terminate()
                p.wait()

        print("| --warmup | reload | keys moved | moved keys missed right after | share |")
        print("| --- | --- | ---: | ---: | ---: |")
        for warmup, event, moved, missed in table:
            print(f"| {warmup} | {event} | {moved} | {missed} | {missed / max(moved, 1):.1%} |")
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "warmup.csv"), "w") as f:
            f.write("second,warmup_1h_hit_ratio,warmup_0_hit_ratio\n")
            for a, b in zip(series["1h"], series["0"]):
                ratio = lambda s: f"{s[2] / s[1]:.4f}" if s[1] else ""
                f.write(f"{a[0]},{ratio(a)},{ratio(b)}\n")
        write_chart(os.path.join(args.out, "warmup_hit_ratio.svg"), series,
                    [args.seconds_per_event * (i + 1) for i in range(len(events))], events)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


RUNS = {"1h": ("#1f77b4", "--warmup 1h"), "0": ("#d62728", "--warmup 0")}


def write_chart(path, series, event_times, events, runs=RUNS):
    """A line chart of the hit ratio per second, one line per run; `runs`
    gives each run's colour and name (benches/replicas.py draws its own)."""
    width, height, left, bottom, top = 720, 300, 50, 40, 20
    seconds = max(len(s) for s in series.values())
    # Seconds spent reading every moved key after a reload have no gets.
    series = {run: [p for p in points if p[1]] for run, points in series.items()}
    lo = min(min(h / g for _, g, h in s) for s in series.values())
    lo = max(0.0, min(0.9, int(lo * 10) / 10))

    def x(t):
        return left + (width - left - 10) * t / max(seconds, 1)

    def y(r):
        return top + (height - top - bottom) * (1 - (r - lo) / (1 - lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    for i in range(6):
        r = lo + (1 - lo) * i / 5
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y(r):.1f}" y2="{y(r):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 5}" y="{y(r) + 4:.1f}" text-anchor="end">{r:.2f}</text>')
    for t, name in zip(event_times, events):
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{height - bottom}" stroke="#999" stroke-dasharray="4"/>')
        parts.append(f'<text x="{x(t) + 3:.1f}" y="{top + 12}">{name}</text>')
    for run, points in series.items():
        line = " ".join(f"{x(t):.1f},{y(h / g):.1f}" for t, g, h in points)
        parts.append(f'<polyline fill="none" stroke="{runs[run][0]}" stroke-width="2" points="{line}"/>')
    legend = ". ".join(f"{'Blue' if colour == '#1f77b4' else 'Red'}: {name}" for colour, name in runs.values())
    parts.append(f'<text x="{left}" y="{height - 8}">seconds; hit ratio per second. {legend}.</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
