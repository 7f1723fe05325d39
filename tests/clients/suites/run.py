"""Run real clients' own test suites, and memcached's own protocol tests,
unmodified, against one subject.

Usage: run.py SUBJECT MEMGATE SUITES [SUITE...]
  SUBJECT  memcached | node | sidecar
  MEMGATE  the memgate binary
  SUITES   the directory the sdists were unpacked into (.ci/run fetches them)
  SUITE    run only these (all by default)
Prints the results as JSON on stdout:
  {suite: {"passed": [...], "failed": [...], "seconds": N}}
(on stdout, because this process's /tmp is its own).

The suites hard-code their servers: 127.0.0.1:11211, a second server on
5000, a unix socket at /tmp/memcached.sock, and (node `memcached`'s, run by
mocha) 11212 and 11213 beside 11211. So this runs in a network
and mount namespace of its own (`unshare --net --mount --pid --fork`,
started by tests/client_suites.rs), where those ports are free and /tmp is private,
and three subjects can run side by side. Each subject gets the same
treatment: four servers (11211-11213 and 5000) and the socket relayed to
11211.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

SUITES = {
    # name: (directory in SUITES, pytest arguments, extra environment)
    "pymemcache": (
        "pymemcache-4.0.0",
        ["pymemcache/test/test_integration.py", "-m", "integration",
         "--server", "127.0.0.1", "--port", "11211"],
        {},
    ),
    "python-binary-memcached": (
        "python_binary_memcached-0.33.0",
        ["test"],
        {"MEMCACHED_HOST": "127.0.0.1"},
    ),
    "pylibmc": (
        "pylibmc-1.6.3",
        ["tests", "--doctest-modules", "src/pylibmc"],
        # Its python modules from the sdist, its C extension as installed.
        {"MEMCACHED_HOST": "127.0.0.1", "MEMCACHED_PORT": "11211", "PYTHONPATH": "src"},
    ),
}


# Node `memcached` 2.2.2's tests (npm), run by mocha with its own options
# (test/mocha.opts, which today's mocha no longer reads) against
# MEMCACHED__HOST's ports 11211-11213; .ci/run unpacks it and installs its
# dependencies and a pinned mocha and should beside it.
NODE_SUITE = ("node-memcached", "memcached-2.2.2")

PORTS = (11211, 11212, 11213, 5000)

# memcached 1.6.18's own tests (t/*.t, from Debian's source package, which
# .ci/run unpacks): those of the protocol, not of memcached's command-line
# options, slab classes, LRU threads or extstore. Each file runs by perl
# against a subject started afresh on a port of its own, through
# MemcachedTest's T_MEMD_USE_DAEMON; a test is FILE::NUMBER.
MEMCACHED_SUITE = ("memcached-t", "memcached-1.6.18", [
    "getset.t", "incrdecr.t", "cas.t", "noreply.t", "flags.t", "getandtouch.t",
    "binary-get.t", "binary.t", "bogus-commands.t", "chunked-items.t", "flush-all.t",
    "expirations.t", "metaget.t", "multiversioning.t", "line-lengths.t",
    "malicious-commands.t", "quit.t", "issue_3.t", "issue_14.t", "issue_29.t",
    "issue_41.t", "issue_68.t", "issue_70.t", "issue_104.t", "issue_108.t",
    "issue_152.t", "issue_192.t",
])
FIRST_SUITE_PORT = 11300


def wait_port(port, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def relay_unix_socket(path, port):
    """Accept on a unix socket and relay each connection to 127.0.0.1:port
    (memcached listens on either a socket or TCP, never both)."""
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)

    def pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve():
        while True:
            client, _ = listener.accept()
            upstream = socket.create_connection(("127.0.0.1", port))
            # A request the client wrote in pieces must not wait for an ACK.
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()


def start_subject(subject, memgate, port, work):
    log = open(os.path.join(work, f"{subject}-{port}.log"), "wb")
    addr = f"127.0.0.1:{port}"
    if subject == "memcached":
        cmd = ["memcached", "-U", "0", "-l", "127.0.0.1", "-p", str(port), "-t", "2"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
    elif subject == "node":
        cmd = [memgate, "node", "--listen", addr, "--insecure-no-auth"]
    elif subject == "sidecar":
        # One TLS + SASL node behind the sidecar, in one process.
        cmd = [memgate, "up", "--nodes", "1", "--listen", addr, "--metrics-listen", "none",
               "--dir", os.path.join(work, f"up-{port}")]
    else:
        raise SystemExit(f"unknown subject {subject}")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    wait_port(port)
    return proc


def junit_results(path):
    passed, failed = [], []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome = [c.tag for c in case]
        if "skipped" in outcome:
            continue
        (failed if "failure" in outcome or "error" in outcome else passed).append(name)
    return {"passed": sorted(passed), "failed": sorted(failed)}


def merge_attempt(merged, xml, runner):
    """The results so far with another attempt's junit file: a test passed
    if any attempt passed it."""
    if not os.path.exists(xml):
        raise SystemExit(f"{runner} wrote no results")
    run = junit_results(xml)
    if merged is None:
        return run
    return {
        "passed": sorted(set(merged["passed"]) | set(run["passed"])),
        "failed": sorted(set(merged["failed"]) - set(run["passed"])),
    }


def pytest(name, root, env, args, work):
    """Run one suite; then its failures once more, since a few of its tests
    time their own stand-in servers and a busy CI machine can miss them.
    A test counts as passed if either run passed it."""
    cache = os.path.join(work, f"{name}-cache")
    merged = None
    for attempt, extra in enumerate(([], ["--last-failed", "--last-failed-no-failures", "none"])):
        xml = os.path.join(work, f"{name}-{attempt}.xml")
        # pytest's report goes to stderr, which tests/client_suites.rs shows
        # when it fails: on a hang, the last test named is the one.
        subprocess.run(
            [sys.executable, "-m", "pytest", "-v", "-o", "addopts=", "-o", f"cache_dir={cache}",
             "--continue-on-collection-errors", "--junitxml", xml, *extra, *args],
            cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr,
            stderr=sys.stderr, timeout=300,
        )
        merged = merge_attempt(merged, xml, f"{name}: pytest")
        if not merged["failed"]:
            break
    return merged


def mocha(root, work):
    """Run node `memcached`'s tests; a failure once more, as pytest()
    does, since its connection tests time their own sockets."""
    tests = sorted(
        os.path.join("test", f) for f in os.listdir(os.path.join(root, "test"))
        if f.endswith(".test.js")
    )
    env = {**os.environ, "MEMCACHED__HOST": "127.0.0.1"}
    merged = None
    for attempt in range(2):
        xml = os.path.join(work, f"node-memcached-{attempt}.xml")
        subprocess.run(
            [os.path.join(root, "node_modules", ".bin", "mocha"), "--require", "should",
             "--ui", "bdd", "--exit", "--timeout", "10000", "--reporter", "xunit",
             "--reporter-option", f"output={xml}", *tests],
            cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr,
            stderr=sys.stderr, timeout=300,
        )
        merged = merge_attempt(merged, xml, "node-memcached: mocha")
        if not merged["failed"]:
            break
    return merged


def memcached_t(subject, memgate, root, files, work):
    """Run memcached's own test files, each against a fresh subject."""
    passed, failed = [], []
    for i, name in enumerate(files):
        port = FIRST_SUITE_PORT + i
        proc = start_subject(subject, memgate, port, work)
        try:
            run = subprocess.run(
                ["perl", os.path.join("t", name)], cwd=root,
                env={**os.environ, "T_MEMD_USE_DAEMON": f"127.0.0.1:{port}"},
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                timeout=120,
            )
            out, err = run.stdout, run.stderr
        except subprocess.TimeoutExpired as hung:
            # What it printed until then counts; the rest is not passed.
            out, err = hung.stdout or b"", (hung.stderr or b"") + b"\n(timed out)\n"
        finally:
            proc.kill()
            proc.wait()
        # TAP: `ok N - what` or `not ok N - what`. A test is a file's
        # `what` (its first 100 characters; some print the values compared),
        # passed if every check of that name passed: the numbers depend on
        # the server (binary.t checks each packet of a `stats` reply, and a
        # node sends other stats than memcached). A test the file never
        # reached (it died) is neither, so it is not passed.
        checks = {}
        for line in out.decode(errors="replace").splitlines():
            ok, _, rest = line.partition(" ")
            if line.startswith("not ok "):
                ok, rest = False, line[len("not ok "):]
            elif ok == "ok":
                ok = True
            else:
                continue
            what = rest.partition(" ")[2].removeprefix("- ")[:100] or "(unnamed)"
            # Numbers out: some names carry a CAS unique or a key's number.
            test = f"{name}::{re.sub(r'[0-9]+', 'N', what)}"
            checks[test] = checks.get(test, True) and ok
        passed += [t for t, ok in checks.items() if ok]
        failed += [t for t, ok in checks.items() if not ok]
        # Its diagnostics go to stderr, which tests/client_suites.rs shows
        # when it fails.
        sys.stderr.write(f"--- {name} ({subject})\n")
        sys.stderr.write(err.decode(errors="replace")[-4000:])
    return {"passed": sorted(passed), "failed": sorted(failed)}


def main():
    subject, memgate, suites = sys.argv[1:4]
    only = sys.argv[4:]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    # A default route into loopback, where a packet for an address that is
    # not local is dropped: a connect to an unroutable address then times
    # out, as on a real network (node `memcached`'s connection tests use
    # 10.255.255.255), instead of failing at once.
    subprocess.run(["ip", "route", "add", "default", "dev", "lo"], check=True)
    # A private /tmp for the suites' unix socket and temporary files.
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/tmp"], check=True)
    work = tempfile.mkdtemp()
    procs = [start_subject(subject, memgate, p, work) for p in PORTS]
    relay_unix_socket("/tmp/memcached.sock", 11211)
    results = {}
    try:
        for name, (directory, args, env) in SUITES.items():
            if only and name not in only:
                continue
            root = os.path.join(suites, directory)
            run_env = {**os.environ, "PYTHONPATH": ".", **env}
            started = time.monotonic()
            results[name] = pytest(name, root, run_env, args, work)
            results[name]["seconds"] = round(time.monotonic() - started, 1)
        name, directory = NODE_SUITE
        if not only or name in only:
            started = time.monotonic()
            results[name] = mocha(os.path.abspath(os.path.join(suites, directory)), work)
            results[name]["seconds"] = round(time.monotonic() - started, 1)
        name, directory, files = MEMCACHED_SUITE
        if not only or name in only:
            started = time.monotonic()
            root = os.path.abspath(os.path.join(suites, directory))
            results[name] = memcached_t(subject, memgate, root, files, work)
            results[name]["seconds"] = round(time.monotonic() - started, 1)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    json.dump(results, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
