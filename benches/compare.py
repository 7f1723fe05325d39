#!/usr/bin/env python3
"""Helpers of benches/compare.sh (Python 3 standard library only).

  port                  print a free loopback port
  facts                 print machine facts (key<TAB>value lines)
  peak RAW              the slowest path's median memgate bench ops/s at 16
                        connections (the rate that 30% and 60% refer to),
                        then that path's name
  idle PORT PID N       RSS of PID before and after N idle client
                        connections: print "before_kib after_kib bytes_each"
  items PORT            print curr_items from `stats`
  report ...            write RESULTS.md and plots/*.svg from the raw runs

The raw file has one measurement a line: section, path, tool, connections,
repeat, value, where value is a number, "a b" numbers, or the path of a
memgate bench JSON report (beside which FILE.cpu holds "proxy_ticks
server_ticks clk_tck": the CPU the path's processes spent during the run).
"""

import argparse
import html
import json
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict

# The paths in table order, with their display names.
PATHS = {
    "direct": "memcached direct",
    "twemproxy": "twemproxy → 3 memcached",
    "stunnel": "stunnel → memcached -Z",
    "memgate-memcached": "memgate → 3 memcached -S -Z",
    "memgate-nodes": "memgate → 3 memgate nodes",
}
PROXIES = ["memgate-memcached", "memgate-nodes"]
# The 1-connection table's paths: the above and a sidecar with --busy-poll
# (off by default) in front of the same memgate nodes.
LAT1_PATHS = {**PATHS, "memgate-nodes-poll": "memgate --busy-poll → 3 memgate nodes"}
COLORS = {
    "direct": "#444444",
    "twemproxy": "#1f77b4",
    "stunnel": "#d62728",
    "memgate-memcached": "#ff7f0e",
    "memgate-nodes": "#2ca02c",
}
TOOLS = {"memcaslap": "memcaslap", "bench": "memgate bench"}
# compare.sh's sections (--only), all of them by default.
SECTIONS = ("paths", "rates", "latency", "churn", "node")
LIMIT_MIB = 64
RSS_TARGET_MIB = 1.15 * LIMIT_MIB + 20


# ---------------------------------------------------------------- helpers


def cmd_port(_args):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def run_out(*cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cmd_facts(_args):
    mem = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            mem[k] = int(v.split()[0])
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    facts = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cores": str(os.cpu_count()),
        "cpu": model,
        "ram": f"{mem['MemTotal'] / 1048576:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "memcached": run_out("memcached", "-V"),
        "memcaslap": run_out("memcaslap", "-V").splitlines()[0] if run_out("memcaslap", "-V") else "",
        "stunnel": next((l for l in run_out("stunnel4", "-version").splitlines() if l.startswith("stunnel")), ""),
        "nutcracker": run_out("nutcracker", "-V").replace("This is ", ""),
        "commit": run_out("git", "-C", os.path.dirname(os.path.abspath(__file__)), "describe", "--always", "--dirty"),
    }
    for k, v in facts.items():
        print(f"{k}\t{v}")


def read_line(sock, end):
    buf = b""
    while not buf.endswith(end):
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("compare.py: connection closed")
        buf += chunk
    return buf


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def cmd_idle(args):
    before = rss_kib(args.pid)
    conns = [socket.create_connection(("127.0.0.1", args.port)) for _ in range(args.n)]
    for c in conns:
        c.sendall(b"version\r\n")
    for c in conns:
        read_line(c, b"\r\n")
    time.sleep(1)
    after = rss_kib(args.pid)
    for c in conns:
        c.close()
    print(before, after, (after - before) * 1024 // args.n)


def cmd_items(args):
    with socket.create_connection(("127.0.0.1", args.port)) as s:
        s.sendall(b"stats\r\n")
        text = read_line(s, b"END\r\n").decode()
    for line in text.splitlines():
        w = line.split()
        if len(w) == 3 and w[1] == "curr_items":
            print(w[2])
            return
    raise SystemExit("compare.py: no curr_items in stats")


def load_raw(path):
    """{(section, path, tool, conns): [value per repeat]}"""
    runs = defaultdict(list)
    with open(path) as f:
        for line in f:
            section, p, tool, conns, rep, value = line.rstrip("\n").split("\t")
            if value.endswith(".json"):
                name = value
                with open(name) as j:
                    value = json.load(j)
                value["point"] = (section, p, int(conns), int(rep))
                if os.path.exists(name + ".cpu"):
                    with open(name + ".cpu") as c:
                        proxy, servers, tck = (int(x) for x in c.read().split())
                    value["cpu_s"] = {"proxy": proxy / tck, "servers": servers / tck}
            elif " " in value:
                value = [float(x) for x in value.split()]
            else:
                value = float(value)
            runs[(section, p, tool, int(conns))].append(value)
    return runs


def answered(r):
    """Requests of a memgate bench run that got a real reply (hit, miss or
    stored): error replies, timeouts and lost requests are not throughput."""
    return r["ops"] - r["errors"]


def good_ops(r):
    return answered(r) / r["elapsed_seconds"] if r["elapsed_seconds"] > 0 else 0.0


def cpu_us(r, side):
    """CPU µs that the path's proxy (or servers) spent per answered request."""
    n = answered(r)
    return r["cpu_s"][side] * 1e6 / n if "cpu_s" in r and n > 0 else None


def peak_level(runs):
    levels = sorted(c for (s, p, t, c) in runs if s == "scale" and p == "direct" and t == "bench")
    return 16 if 16 in levels else levels[-1]


def peaks(runs):
    """{path: median answered ops/s} at the peak level."""
    level = peak_level(runs)
    return {p: statistics.median(good_ops(r) for r in runs[("scale", p, "bench", level)])
            for p in PATHS if runs.get(("scale", p, "bench", level))}


def cmd_peak(args):
    by_path = peaks(load_raw(args.raw))
    slowest = min(by_path, key=by_path.get)
    print(int(by_path[slowest]), slowest)


# ---------------------------------------------------------------- the report


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def num(x):
    return f"{x:,.0f}"


def us1(x):
    return f"{x:.1f}"


def ms(us):
    return f"{us / 1000:.3f}" if us < 10_000 else f"{us / 1000:.1f}"


def cell(s, fmt=num):
    return "n/a" if s is None else f"{fmt(s[0])} ({fmt(s[1])}–{fmt(s[2])})"


def ratio(a, b):
    if a is None or b is None or b[0] == 0:
        return None
    return a[0] / b[0]


def rcell(r, digits=2):
    return "n/a" if r is None else f"{r:.{digits}f}×"


def check(ok):
    return "✅ met" if ok else "❌ not met"


class Report:
    def __init__(self, args):
        self.a = args
        self.runs = load_raw(args.raw)
        self.levels = [int(x) for x in args.levels.split()]
        self.churn_levels = [int(x) for x in args.churn_levels.split()]
        self.sections = set(args.sections.split())
        self.lines = []

    def w(self, *lines):
        self.lines.extend(lines)

    def ops(self, section, path, tool, conns):
        values = self.runs.get((section, path, tool, conns), [])
        if tool == "bench":
            values = [good_ops(r) for r in values]
        else:
            values = [v[0] if isinstance(v, list) else v for v in values]
        return summary(values)

    def lat(self, section, path, conns, p):
        return summary([r["latency_us"][p] for r in self.runs.get((section, path, "bench", conns), [])])

    def low_rates(self):
        """The fixed rates of the paced sender's check (ops/s)."""
        return [int(rate) for rate in self.a.low_rates.split()]

    def send_lag(self, section, path, conns, p):
        """How late the paced sender left behind the intended times (µs)."""
        return summary([r["send_lag_us"][p] for r in self.runs.get((section, path, "bench", conns), [])
                        if r.get("send_lag_us")])

    def cpu(self, section, path, conns, side):
        return summary([cpu_us(r, side) for r in self.runs.get((section, path, "bench", conns), [])])

    def bench_points(self):
        """Every measured memgate bench run (prefills are not in the raw file)."""
        return [r for (s, p, t, c), runs in sorted(self.runs.items()) if t == "bench" for r in runs
                if isinstance(r, dict)]

    def latency_row(self, section, path):
        """name, p50, p99, p99.9 (ms) at 16 connections, and p99 over direct's."""
        p99 = self.lat(section, path, 16, "p99")
        return [PATHS[path], cell(self.lat(section, path, 16, "p50"), ms), cell(p99, ms),
                cell(self.lat(section, path, 16, "p99_9"), ms), rcell(ratio(p99, self.lat(section, "direct", 16, "p99")))]

    def table(self, head, rows, align=None):
        align = align or ["---"] + ["---:"] * (len(head) - 1)
        self.w("| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |")
        for row in rows:
            self.w("| " + " | ".join(row) + " |")
        self.w("")

    def write(self):
        a = self.a
        facts = dict(l.rstrip("\n").split("\t", 1) for l in open(a.facts) if "\t" in l)
        facts_end = dict(l.rstrip("\n").split("\t", 1) for l in open(a.facts_end) if "\t" in l)
        self.w(
            "# Benchmark results",
            "",
            f"Written by `{a.invocation}` ({a.elapsed // 60} min {a.elapsed % 60} s), which starts every server, "
            "proxy and load generator itself on loopback and measures all of them in the same run. "
            "**The machine is a shared, noisy VM**: the load generators, the proxies and the servers compete "
            "for the same cores, and other jobs may run beside them, so absolute numbers move from run to run; "
            "the ratios between paths measured in the same run are what count.",
            "",
            f"Workload unless said otherwise: 90% get / 10% set, 100-byte values, 16 connections, one request "
            f"in flight per connection, key space prefilled; {a.duration} s per point, {a.repeats} repeat(s) with "
            "the paths interleaved within each repeat (their order turning by one each time). Cells show the "
            "median and, in brackets, min–max over the repeats. Throughput is measured with both memgate bench and "
            "memcaslap (libmemcached-tools' memaslap, an independent tool); latency percentiles come from memgate "
            "bench's HDR histograms (microsecond resolution, shown in ms).",
            "",
            "## Machine",
            "",
        )
        self.table(
            ["fact", "value"],
            [
                ["date (start)", facts.get("date", "")],
                ["cores", f"{facts.get('cores', '')} ({facts.get('cpu', '')})"],
                ["RAM", facts.get("ram", "")],
                ["kernel", facts.get("kernel", "")],
                ["load average (1, 5, 15 min) at start / end", f"{facts.get('load', '')} / {facts_end.get('load', '')}"],
                ["memcached version", facts.get("memcached", "")],
                ["memcaslap version", facts.get("memcaslap", "")],
                ["stunnel version", facts.get("stunnel", "")],
                ["twemproxy version", facts.get("nutcracker", "")],
                ["memgate build", f"release build of commit {facts.get('commit', '')}"],
            ],
            ["---", "---"],
        )
        self.targets()
        self.replies()
        for section, write in (("paths", self.paths), ("latency", self.one_connection), ("node", self.node),
                               ("churn", self.churn), ("rates", self.rates), ("paths", self.scaling)):
            if section in self.sections:
                write()
        self.w("## Commands", "", "The first command of each kind, as run (ports are picked free each run; "
               "`$WORK` is the run's temp dir):", "", "```")
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        seen = set()
        for line in open(a.commands):
            line = line.rstrip("\n").replace(a.work, "$WORK").replace(repo + "/", "")
            kind = re.sub(r"\d{4,}", "N", line)  # ports and rates differ per run
            if kind not in seen:
                seen.add(kind)
                self.w(line)
        self.w("```", "")
        if os.path.exists(os.path.join(repo, "benches", "NOTES.md")):
            self.w("Profiles and earlier investigations: [NOTES.md](NOTES.md).", "")
        with open(os.path.join(a.out, "RESULTS.md"), "w") as f:
            f.write("\n".join(self.lines))

    # The targets of the node and proxy issues, checked on this run.
    def targets(self):
        self.w("## Targets", "")
        rows = []
        for tool in TOOLS:
            st = self.ops("scale", "stunnel", tool, 16)
            tw = self.ops("scale", "twemproxy", tool, 16)
            for p in PROXIES:
                m = self.ops("scale", p, tool, 16)
                r = ratio(m, st)
                rows.append([f"{PATHS[p]}: ≥ 1.3 × stunnel ({TOOLS[tool]})", rcell(r), check(r is not None and r >= 1.3)])
                r = ratio(m, tw)
                rows.append([f"{PATHS[p]}: ≥ 1.0 × twemproxy ({TOOLS[tool]})", rcell(r), check(r is not None and r >= 1.0)])
        c = self.churn_target_level()
        for p in PROXIES:
            r = ratio(self.ops("churn", p, "bench", c), self.ops("churn", "stunnel", "bench", c))
            rows.append([f"churn: {PATHS[p]} ≥ 20 × stunnel ({c} workers)", rcell(r, 1),
                         check(r is not None and r >= 20)])
        start = self.runs.get(("rss-start", "memgate-nodes", "python", 0))
        if start:
            mib = start[0] / 1024
            rows.append(["sidecar idle RSS ≤ 20 MiB (before any load)", f"{mib:.1f} MiB", check(mib <= 20)])
        idle = self.runs.get(("idle", "memgate-nodes", "python", 0))
        if idle:
            before, _after, each = idle[0]
            rows.append(["sidecar idle RSS ≤ 20 MiB (after all the runs)", f"{before / 1024:.1f} MiB",
                         check(before / 1024 <= 20)])
            rows.append(["sidecar ≤ 64 KiB per idle client connection", f"{each / 1024:.1f} KiB", check(each <= 65536)])
        tw16 = self.cpu("scale", "twemproxy", 16, "proxy")
        tw1 = {q: self.lat("lat1", "twemproxy", 1, q) for q in ("p50", "p99")}
        for p in PROXIES:
            r = ratio(self.cpu("scale", p, 16, "proxy"), tw16)
            rows.append([f"{PATHS[p]}: proxy CPU per request ≤ twemproxy's at 16 connections", rcell(r),
                         check(r is not None and r <= 1.0)])
        for p in PROXIES + ["memgate-nodes-poll"]:
            if not self.lat("lat1", p, 1, "p50"):
                continue
            for q in ("p50", "p99"):
                r = ratio(self.lat("lat1", p, 1, q), tw1[q])
                rows.append([f"{LAT1_PATHS[p]}: {q} ≤ twemproxy's at 1 connection", rcell(r),
                             check(r is not None and r <= 1.0)])
        closed = self.lat("lat1", "direct", 1, "p50")
        for rate in self.low_rates():
            low = self.lat("lowrate", "direct", rate, "p50")
            if low and closed:
                d = low[0] - closed[0]
                rows.append([f"paced sender: direct p50 at {num(rate)} ops/s within 10 µs of closed loop",
                             f"{d:+.0f} µs", check(abs(d) <= 10)])
            lag = self.send_lag("lowrate", "direct", rate, "p50")
            if lag:
                rows.append([f"paced sender: p50 send lag at {num(rate)} ops/s ≤ 10 µs (leaves on time)",
                             f"{lag[0]:.0f} µs", check(lag[0] <= 10)])
        errors = sum(r["errors"] for r in self.bench_points())
        rows.append(["no error replies in any memgate bench point", num(errors), check(errors == 0)])
        for tool in TOOLS:
            r = ratio(self.ops("node", "memgate", tool, 16), self.ops("node", "memcached", tool, 16))
            rows.append([f"node throughput ≥ 1.0 × memcached ({TOOLS[tool]})", rcell(r), check(r is not None and r >= 1.0)])
        for tool in TOOLS:
            mc, mg = self.fill(tool, "memcached"), self.fill(tool, "memgate")
            if mc[0] and mg[0]:
                r = ratio(mg[0], mc[0])
                rows.append([f"node items held ≥ memcached (filled by {TOOLS[tool]})", rcell(r), check(r >= 1.0)])
                rows.append([f"node RSS ≤ 1.15 × 64 MiB + 20 MiB = {RSS_TARGET_MIB:.1f} MiB (filled by {TOOLS[tool]})",
                             f"{mg[1][0]:.1f} MiB", check(mg[1][0] <= RSS_TARGET_MIB)])
        if self.sections != set(SECTIONS):
            # A run of some sections only: the targets of the others have no figures.
            rows = [row for row in rows if row[1] != "n/a"]
        self.table(["target (from the node, proxy and upstream issues)", "this run", ""], rows,
                   ["---", "---:", "---"])

    def replies(self):
        """Every point's replies, checked: error replies are not throughput
        (every ops/s here counts hits, misses and stored only), and a point
        that had any is listed with a ⚠."""
        self.w("## Replies checked", "")
        points = self.bench_points()
        errors = sum(r["errors"] for r in points)
        misses = defaultdict(int)
        gets = defaultdict(int)
        for r in points:
            misses[r["point"][0]] += r["misses"]
            gets[r["point"][0]] += r["hits"] + r["misses"]
        self.w(f"{len(points)} memgate bench points, {num(sum(answered(r) for r in points))} requests answered, "
               f"{num(errors)} error replies (errors, timeouts and requests lost with a connection; never "
               "counted as throughput). Get misses by section (every key is prefilled, so a miss means a "
               "lost write or an eviction): "
               + ", ".join(f"{k} {num(v)} of {num(gets[k])}" for k, v in sorted(misses.items())) + ".", "")
        bad = [r for r in points if r["errors"]]
        caslap = [(k, v) for k, vs in sorted(self.runs.items()) if k[2] == "memcaslap"
                  for v in vs if isinstance(v, list) and len(v) > 1 and v[1] > 0]
        if caslap:
            self.w(f"memcaslap reports no error replies; it reported get misses in {len(caslap)} of its points "
                   "(it reads keys of its own, which it has not always set yet).", "")
        if bad:
            rows = [[f"⚠ {s} / {LAT1_PATHS.get(p, p)} / {c} conn / run {n}", num(r["errors"]), num(r["timeouts"]),
                     num(r["lost"]), num(r["misses"]), num(r["ops"])]
                    for r in bad for (s, p, c, n) in [r["point"]]]
            self.table(["point with error replies", "errors", "timeouts", "lost", "misses", "replies"], rows)

    def fill(self, tool, server):
        values = self.runs.get((f"fill-{tool}", server, tool, 16), [])
        return summary([v[0] for v in values]), summary([v[1] / 1024 for v in values])

    def paths(self):
        self.w("## 1. The sidecar paths at 16 connections", "",
               "CPU per request: utime + stime of the path's proxy process (twemproxy, stunnel, memgate proxy) "
               "and, summed, of its servers, from `/proc/PID/stat` before and after each memgate bench run, "
               "over the requests answered without an error. The server side runs pinned to one core and the "
               "load generator to the other (see Commands).", "")
        rows = []
        for tool in TOOLS:
            d, st, tw = (self.ops("scale", p, tool, 16) for p in ("direct", "stunnel", "twemproxy"))
            for p, name in PATHS.items():
                m = self.ops("scale", p, tool, 16)
                cpu = ["", ""]
                if tool == "bench":
                    cpu = ["—" if p == "direct" else cell(self.cpu("scale", p, 16, "proxy"), us1),
                           cell(self.cpu("scale", p, 16, "servers"), us1)]
                rows.append([name, TOOLS[tool], cell(m), rcell(ratio(m, d)), rcell(ratio(m, st)), rcell(ratio(m, tw))]
                            + cpu)
        self.table(["path", "tool", "ops/s", "× direct", "× stunnel", "× twemproxy", "proxy CPU µs/req",
                    "servers CPU µs/req"], rows, ["---", "---", "---:", "---:", "---:", "---:", "---:", "---:"])
        rows = [self.latency_row("scale", p) for p in PATHS]
        self.w("Closed-loop latency in the same memgate bench runs (ms, from each request's send):", "")
        self.table(["path", "p50", "p99", "p99.9", "p99 × direct"], rows)
        self.curve_plot("scale", "latency_distribution.svg",
                        "Latency distribution, closed loop, 16 connections (memgate bench)")

    def node(self):
        self.w("## 2. memgate node vs memcached", "",
               "`memgate node --insecure-no-auth` and `memcached -t 4`, both at a 64 MiB limit, plain text, "
               "16 connections.", "")
        rows = []
        for tool in TOOLS:
            mc = self.ops("node", "memcached", tool, 16)
            for server in ("memcached", "memgate"):
                m = self.ops("node", server, tool, 16)
                hits, cpu = "", ""
                if tool == "bench":
                    hits = "{:.2f}".format(statistics.median(r["hit_ratio"] for r in self.runs[("node", server, tool, 16)]))
                    cpu = cell(self.cpu("node", server, 16, "servers"), us1)
                rows.append([server, TOOLS[tool], cell(m), rcell(ratio(m, mc)), hits, cpu])
        self.table(["server", "tool", "ops/s", "× memcached", "get hit ratio", "server CPU µs/req"], rows,
                   ["---", "---", "---:", "---:", "---:", "---:"])
        self.w(f"Filled with 100-byte values: {self.a.fill_keys:,} distinct keys set (16-byte keys with memcaslap, "
               "`memgate-bench:N` with memgate bench), a fresh process for each fill, then `curr_items` and the "
               "process's RSS:", "")
        rows = []
        for tool in TOOLS:
            mc_items = self.fill(tool, "memcached")[0]
            for server in ("memcached", "memgate"):
                items, rss = self.fill(tool, server)
                if items is None:
                    continue
                rows.append([server, TOOLS[tool], cell(items), rcell(ratio(items, mc_items)),
                             cell(rss, lambda x: f"{x:.1f}"), f"{rss[0] / LIMIT_MIB:.2f}"])
        self.table(["server", "filled by", "items held", "× memcached", "RSS MiB", "RSS / limit"], rows,
                   ["---", "---", "---:", "---:", "---:", "---:"])

    def churn_target_level(self):
        """The target is read at the most workers measured: where stunnel's
        handshakes saturate and a proxy's accept path is pushed hardest."""
        return max(self.churn_levels)

    def churn(self):
        self.w("## 3. Connection churn", "",
               "memgate bench `--churn`: each of N concurrent workers loops connect, one `get` of a prefilled key, "
               "read and verify the reply (the key's own value), close; no request is pipelined and no connection "
               f"reused. {self.a.duration} s per point. Connections/s count only connections answered with the right "
               "value; latency runs from the start of the connect to the whole reply. Behind stunnel every "
               "connection is a TLS handshake with memcached -Z; the memgate sidecar keeps its upstream "
               "connections, so it pays only the accept and the session. CPU per connection as in section 1 "
               "(utime + stime from `/proc/PID/stat`, over the connections answered). The load generator is "
               "pinned to its core like every other memgate bench run.", "")
        for c in self.churn_levels:
            d, st = self.ops("churn", "direct", "bench", c), self.ops("churn", "stunnel", "bench", c)
            rows = []
            for p, name in PATHS.items():
                runs = self.runs.get(("churn", p, "bench", c), [])
                if not runs:
                    continue
                m = self.ops("churn", p, "bench", c)
                failed = sum(r["errors"] for r in runs)
                no_reply = sum(r["timeouts"] + r["lost"] for r in runs)
                refused = sum(r["connect_failures"] for r in runs)
                rows.append([name, cell(m), rcell(ratio(m, d)), rcell(ratio(m, st), 1),
                             cell(self.lat("churn", p, c, "p50"), ms), cell(self.lat("churn", p, c, "p99"), ms),
                             "—" if p == "direct" else cell(self.cpu("churn", p, c, "proxy"), us1),
                             cell(self.cpu("churn", p, c, "servers"), us1),
                             f"{num(failed)} ({num(refused)} / {num(no_reply)})"])
            if rows:
                self.w(f"### {c} worker{'s' if c > 1 else ''}", "")
                self.table(["path", "connections/s", "× direct", "× stunnel", "p50 ms", "p99 ms",
                            "proxy CPU µs/conn", "servers CPU µs/conn", "failed (no connection / no reply)"], rows)
        idle = self.runs.get(("idle", "memgate-nodes", "python", 0))
        if idle:
            before, after, each = idle[0]
            start = self.runs.get(("rss-start", "memgate-nodes", "python", 0), [0])[0]
            self.w(f"The sidecar's (memgate → 3 memgate nodes) RSS: {start / 1024:.1f} MiB started and prefilled, "
                   f"before any other load; {before / 1024:.1f} MiB after all the runs above (up to 256 connections); "
                   f"with idle client connections open: {after / 1024:.1f} MiB, {each / 1024:.1f} KiB each.", "")

    def one_connection(self):
        self.w("## 1b. Latency at one connection", "",
               f"Closed loop, one connection, one request in flight, memgate bench (memcaslap reports no "
               f"percentiles), {self.a.rounds} round(s) of {self.a.duration} s with the paths interleaved; "
               "µs from each request's send. Proxy CPU as in section 1.", "")
        tw = {q: self.lat("lat1", "twemproxy", 1, q) for q in ("p50", "p99")}
        rows = []
        for p, name in LAT1_PATHS.items():
            p50, p99 = self.lat("lat1", p, 1, "p50"), self.lat("lat1", p, 1, "p99")
            if p not in PATHS and not p50:
                continue
            rows.append([name, cell(p50), cell(self.lat("lat1", p, 1, "p90")), cell(p99),
                         rcell(ratio(p50, tw["p50"])), rcell(ratio(p99, tw["p99"])), cell(self.ops("lat1", p, "bench", 1)),
                         "—" if p == "direct" else cell(self.cpu("lat1", p, 1, "proxy"), us1)])
        self.table(["path", "p50 µs", "p90 µs", "p99 µs", "p50 × twemproxy", "p99 × twemproxy", "ops/s",
                    "proxy CPU µs/req"], rows)
        closed = self.lat("lat1", "direct", 1, "p50")
        for rate in self.low_rates():
            low = self.lat("lowrate", "direct", rate, "p50")
            if not low:
                continue
            self.w(f"The paced sender's check: memcached direct at a fixed {num(rate)} ops/s on one "
                   f"connection (latency from each intended send time), p50 {cell(low)} µs, p90 "
                   f"{cell(self.lat('lowrate', 'direct', rate, 'p90'))} µs, p99 "
                   f"{cell(self.lat('lowrate', 'direct', rate, 'p99'))} µs; closed loop in the same rounds, p50 "
                   f"{cell(closed)} µs. The sender's own lateness behind the intended times (send lag, part of "
                   f"those latencies): p50 {cell(self.send_lag('lowrate', 'direct', rate, 'p50'))} µs, p99 "
                   f"{cell(self.send_lag('lowrate', 'direct', rate, 'p99'))} µs.", "")
        self.w("What is left of a difference beyond the send lag is the reply path waking from idle between "
               "requests (1 ms apart at 1,000 ops/s, 250 µs at 4,000, back to back in closed loop): see "
               "NOTES.md, \"bench --rate\".", "")

    def rates(self):
        self.w("## 4. Latency at a fixed offered load", "")
        by_path = peaks(self.runs)
        if not by_path:
            return
        slowest = min(by_path, key=by_path.get)
        self.w(f"Offered load: 30% and 60% of the slowest path's median peak ({PATHS[slowest]}, "
               f"{num(by_path[slowest])} ops/s, memgate bench, {peak_level(self.runs)} connections, measured above "
               "in the same run), so that every path can carry it; spread over 16 connections. Latency counts from "
               "each request's *intended* send time, so a path that falls behind shows its queue (no coordinated "
               "omission). \"kept up\" is no when the run needed more than 10% longer than its duration to drain. "
               "The load generator is pinned as for every other run (MEMGATE_COMPARE_PACED_CPUS moves it); its "
               "own lateness behind the intended times (send lag) is part of these latencies, and is shown for "
               "the paced check in 1b.", "")
        for pct in (30, 60):
            section = f"rate{pct}"
            rows = []
            for p in PATHS:
                runs = self.runs.get((section, p, "bench", 16), [])
                if not runs:
                    continue
                kept = sum(r["elapsed_seconds"] <= self.a.duration * 1.1 for r in runs)
                rows.append(self.latency_row(section, p)
                            + ["yes" if kept == len(runs) else f"no ({len(runs) - kept} of {len(runs)})"])
            rate = runs[0]["rate"] if runs else 0
            self.w(f"### {pct}%: {num(rate)} ops/s", "")
            self.table(["path", "p50 ms", "p99 ms", "p99.9 ms", "p99 × direct", "kept up"], rows)
        self.curve_plot("rate30", "latency_distribution_rate30.svg",
                        "Latency distribution at 30% of the slowest path's peak (memgate bench, from intended send times)")

    def scaling(self):
        self.w("## 5. Scaling with connections", "",
               "Closed loop, one request in flight per connection. Each cell: median ops/s and the ratio to the "
               "direct path at the same number of connections.", "")
        for tool in TOOLS:
            rows = []
            for p, name in PATHS.items():
                row = [name]
                for c in self.levels:
                    m = self.ops("scale", p, tool, c)
                    row.append("n/a" if m is None else f"{num(m[0])} ({rcell(ratio(m, self.ops('scale', 'direct', tool, c)))})")
                rows.append(row)
            self.w(f"Throughput, {TOOLS[tool]}:", "")
            self.table(["path"] + [f"{c} conn" for c in self.levels], rows)
        rows = []
        for p, name in PATHS.items():
            rows.append([name] + [cell(self.lat("scale", p, c, "p99"), ms) for c in self.levels])
        self.w("p99 latency in ms (memgate bench):", "")
        self.table(["path"] + [f"{c} conn" for c in self.levels], rows)
        self.w("![throughput vs connections](plots/throughput_vs_connections.svg)", "",
               "![p99 vs connections](plots/p99_vs_connections.svg)", "")
        series = []
        for tool, dash in (("bench", ""), ("memcaslap", "5,4")):
            for p, name in PATHS.items():
                pts = [(c, self.ops("scale", p, tool, c)) for c in self.levels]
                series.append((f"{name} ({TOOLS[tool]})", COLORS[p], dash,
                               [(c, s[0]) for c, s in pts if s is not None]))
        chart(os.path.join(self.a.out, "plots", "throughput_vs_connections.svg"),
              "Throughput vs connections (solid: memgate bench, dashed: memcaslap)",
              "connections", "ops/s", series, xticks=[(c, str(c)) for c in self.levels], xlog=True)
        series = []
        for p, name in PATHS.items():
            pts = [(c, self.lat("scale", p, c, "p99")) for c in self.levels]
            series.append((name, COLORS[p], "", [(c, s[0] / 1000) for c, s in pts if s is not None]))
        chart(os.path.join(self.a.out, "plots", "p99_vs_connections.svg"), "p99 latency vs connections (memgate bench)",
              "connections", "p99 (ms)", series, xticks=[(c, str(c)) for c in self.levels], xlog=True, ylog=True)

    def curve_plot(self, section, name, title):
        """Percentile curve per path at 16 connections, the median over
        repeats at each quantile; shown in the report where it is called."""
        self.w(f"![{title}](plots/{name})", "")
        series = []
        for p, pname in PATHS.items():
            runs = self.runs.get((section, p, "bench", 16), [])
            if not runs:
                continue
            by_q = defaultdict(list)
            for r in runs:
                for q, us in r["latency_curve_us"]:
                    by_q[q].append(us)
            pts = [(nines(q), statistics.median(v) / 1000) for q, v in sorted(by_q.items())]
            series.append((pname, COLORS[p], "", pts))
        ticks = [(0, "0"), (1, "90"), (2, "99"), (3, "99.9"), (4, "99.99"), (MAX_X, "max")]
        chart(os.path.join(self.a.out, "plots", name), title, "percentile", "latency (ms)", series,
              xticks=ticks, ylog=True)


MAX_X = 4.6


def nines(q):
    """The x of a quantile on a percentile plot: 90% -> 1, 99% -> 2, max last."""
    return MAX_X if q >= 1 else -math.log10(1 - q)


def chart(path, title, xlabel, ylabel, series, xticks, xlog=False, ylog=False):
    """A line chart as a hand-written SVG."""
    width, height, left, right, top, bottom = 960, 480, 80, 340, 40, 50
    pw, ph = width - left - right, height - top - bottom
    fx = (lambda x: math.log2(x)) if xlog else (lambda x: x)
    ys = [y for _, _, _, pts in series for _, y in pts if y > 0]
    if not ys:
        ys = [1]
    if ylog:
        lo, hi = 10 ** math.floor(math.log10(min(ys))), 10 ** math.ceil(math.log10(max(ys)))
        fy = lambda y: (math.log10(max(y, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        yticks = [10 ** e for e in range(round(math.log10(lo)), round(math.log10(hi)) + 1)]
    else:
        hi = nice(max(ys) * 1.05)
        fy = lambda y: y / hi
        yticks = [hi * i / 5 for i in range(6)]
    xs = [fx(x) for x, _ in xticks]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x1 = x0 + 1
    px = lambda x: left + (fx(x) - x0) / (x1 - x0) * pw
    py = lambda y: top + ph - fy(y) * ph
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left + pw / 2}" y="22" text-anchor="middle" font-size="14">{html.escape(title)}</text>']
    for y in yticks:
        yy = py(y)
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="#ddd"/>')
        label = f"{y:g}" if ylog else num(y)
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{label}</text>')
    for x, label in xticks:
        xx = px(x)
        out.append(f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{top + ph}" stroke="#eee"/>')
        out.append(f'<text x="{xx:.1f}" y="{top + ph + 16}" text-anchor="middle">{html.escape(label)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 10}" text-anchor="middle">{html.escape(xlabel)}</text>')
    out.append(f'<text x="18" y="{top + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 18 {top + ph / 2})">{html.escape(ylabel)}</text>')
    for i, (name, color, dash, pts) in enumerate(series):
        if pts:
            d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"{dash_attr}/>')
            for x, y in pts:
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{color}"/>')
        ly = top + 10 + i * 18
        lx = left + pw + 14
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="{color}" stroke-width="2"{dash_attr}/>')
        out.append(f'<text x="{lx + 30}" y="{ly + 4}">{html.escape(name)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def nice(x):
    """The next round number at or above x, for a linear axis."""
    if x <= 0:
        return 1
    e = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        if m * e >= x:
            return m * e
    return 10 * e


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("port").set_defaults(f=cmd_port)
    sub.add_parser("facts").set_defaults(f=cmd_facts)
    p = sub.add_parser("peak")
    p.add_argument("raw")
    p.set_defaults(f=cmd_peak)
    p = sub.add_parser("idle")
    p.add_argument("port", type=int)
    p.add_argument("pid", type=int)
    p.add_argument("n", type=int)
    p.set_defaults(f=cmd_idle)
    p = sub.add_parser("items")
    p.add_argument("port", type=int)
    p.set_defaults(f=cmd_items)
    p = sub.add_parser("report")
    for name in ("raw", "commands", "facts", "facts-end", "out", "levels", "churn-levels", "sections",
                 "invocation", "work"):
        p.add_argument("--" + name, required=True)
    p.add_argument("--low-rates", required=True)
    for name in ("duration", "repeats", "rounds", "fill-keys", "elapsed"):
        p.add_argument("--" + name, type=int, required=True)
    p.set_defaults(f=lambda a: Report(a).write())
    args = ap.parse_args()
    args.f(args)


if __name__ == "__main__":
    sys.exit(main())
