"""Real Python memcached clients through the memgate sidecar.

Usage: proxy_clients.py PROXY_ADDR USER PASSWORD

The proxy listens without TLS or login; USER/PASSWORD are its own upstream
credentials, which clients that still log in may send (they are accepted
whatever they carry). Every check compares values byte for byte; any failure
raises.
"""
import os
import sys

import bmemcached
import pylibmc
from pymemcache.client.base import Client as PyMemcache

proxy, user, password = sys.argv[1:4]
host, port = proxy.rsplit(":", 1)
port = int(port)


def blob(n, seed):
    """Deterministic bytes covering every byte value, CR and LF included."""
    return bytes((i * 7 + seed) % 256 for i in range(n))


def exercise_pymemcache(client, label):
    key = f"py-{label.replace(' ', '-')}".encode()
    value = blob(5000, 3)
    assert client.set(key, value, noreply=False)
    assert client.get(key) == value
    assert client.add(key, b"x", noreply=False) is False
    assert client.replace(key, b"r" * 10, noreply=False)
    assert client.append(key, b"\r\ntail", noreply=False)
    assert client.prepend(key, b"head", noreply=False)
    assert client.get(key) == b"head" + b"r" * 10 + b"\r\ntail"
    value, cas = client.gets(key)
    assert client.cas(key, b"new", cas, noreply=False)
    assert client.cas(key, b"newer", cas, noreply=False) is False
    assert client.get(key) == b"new"
    assert client.set(key + b"-noreply", b"quiet", noreply=True) is True
    assert client.get(key + b"-noreply") == b"quiet"
    assert client.set(b"py-counter-" + key, b"10", noreply=False)
    assert client.incr(b"py-counter-" + key, 5) == 15
    assert client.decr(b"py-counter-" + key, 100) == 0
    assert client.incr(b"py-missing-" + key, 1) is None
    many = {f"py-many-{key.decode()}-{i}".encode(): blob(i * 37, i) for i in range(60)}
    assert client.set_many(many, noreply=False) == []
    got = client.get_many(list(many) + [b"py-absent"])
    assert got == {k: v for k, v in many.items() if v != b""} or got == many, got.keys()
    for k, v in many.items():
        assert client.get(k) == v, k
    assert client.touch(b"py-counter-" + key, 100, noreply=False)
    assert client.delete(key, noreply=False)
    assert client.delete(key, noreply=False) is False
    assert client.get(key) is None
    big = os.urandom(900 * 1024)
    assert client.set(key + b"-big", big, noreply=False)
    assert client.get(key + b"-big") == big
    stats = client.stats()
    assert b"curr_items" in stats or "curr_items" in stats, stats
    assert client.version()
    print(f"pymemcache {label}: ok")


# pymemcache, text protocol, no credentials at all.
exercise_pymemcache(PyMemcache((host, port)), "text")

# pymemcache with MemCachier's ASCII auth as its first command.
c = PyMemcache((host, port))
assert c.set(user, password, noreply=False), "ASCII login refused"
exercise_pymemcache(c, "ascii auth")
assert c.get(user) is None, "the login must not be stored as an item"


def exercise_pylibmc(mc, label):
    tag = label.replace(" ", "-")
    mc.set(f"pl-{tag}", "value")
    assert mc.get(f"pl-{tag}") == "value"
    raw = blob(20000, 11)
    mc.set(f"pl-raw-{tag}", raw)
    assert mc.get(f"pl-raw-{tag}") == raw
    items = {f"pl-{tag}-{i}": i * 1001 for i in range(50)}
    mc.set_multi(items)
    got = mc.get_multi(list(items) + [f"pl-{tag}-absent"])
    assert got == items, got
    assert mc.add(f"pl-{tag}", "x") is False
    assert mc.replace(f"pl-{tag}", "replaced")
    assert mc.get(f"pl-{tag}") == "replaced"
    mc.set(f"pl-n-{tag}", 5)
    assert mc.incr(f"pl-n-{tag}", 3) == 8
    assert mc.decr(f"pl-n-{tag}", 10) == 0
    assert mc.append(f"pl-{tag}", "+a")
    assert mc.prepend(f"pl-{tag}", "p+")
    assert mc.get(f"pl-{tag}") == "p+replaced+a"
    value, cas = mc.gets(f"pl-{tag}")
    assert mc.cas(f"pl-{tag}", "cas-new", cas)
    assert not mc.cas(f"pl-{tag}", "cas-newer", cas)
    assert mc.get(f"pl-{tag}") == "cas-new"
    assert mc.touch(f"pl-{tag}", 300)
    assert mc.delete(f"pl-{tag}")
    assert mc.get(f"pl-{tag}") is None
    assert not mc.delete(f"pl-{tag}")
    try:
        mc.set(f"pl-huge-{tag}", os.urandom(1024 * 1024 + 10))
        raise AssertionError("pylibmc stored an item over 1 MB")
    except pylibmc.Error:
        pass
    # The connection is still in sync after the refusal.
    assert mc.get(f"pl-n-{tag}") == 0
    mc.delete_multi([f"pl-{tag}-{i}" for i in range(10)])
    assert mc.get(f"pl-{tag}-0") is None and mc.get(f"pl-{tag}-10") == 10010
    print(f"pylibmc {label}: ok")


servers = [f"{host}:{port}"]
exercise_pylibmc(pylibmc.Client(servers, binary=False, behaviors={"cas": True}), "text")
# pylibmc itself refuses credentials with the text protocol (libmemcached has
# SASL only in binary), so "text with credentials" never reaches the proxy.
try:
    pylibmc.Client(servers, binary=False, username=user, password=password)
    raise AssertionError("pylibmc accepted SASL over text")
except TypeError as e:
    assert "binary" in str(e), e
    print("pylibmc text with credentials: refused by pylibmc itself")
exercise_pylibmc(pylibmc.Client(servers, binary=True, behaviors={"cas": True}), "binary")
exercise_pylibmc(
    pylibmc.Client(servers, binary=True, username=user, password=password, behaviors={"cas": True}),
    "binary with credentials",
)

# python-binary-memcached, binary + SASL with credentials.
bm = bmemcached.Client([proxy], user, password)
assert bm.set("bm-key", "hello")
assert bm.get("bm-key") == "hello"
raw = blob(30000, 5)
assert bm.set("bm-raw", raw, compress_level=0)
assert bm.get("bm-raw") == raw
assert bm.set_multi({f"bm-m{i}": i for i in range(20)}) is not False
got = bm.get_multi([f"bm-m{i}" for i in range(20)] + ["bm-absent"])
assert got == {f"bm-m{i}": i for i in range(20)}, got
assert bm.add("bm-key", "x") is False
assert bm.replace("bm-key", "world")
assert bm.get("bm-key") == "world"
assert bm.set("bm-n", 5)
assert bm.incr("bm-n", 2) == 7
assert bm.decr("bm-n", 10) == 0
assert bm.delete("bm-key")
assert bm.get("bm-key") is None
try:
    bm.set("bm-too-big", os.urandom(1024 * 1024), compress_level=0)
    raise AssertionError("a >1 MB item must be refused")
except bmemcached.exceptions.MemcachedException as e:
    assert e.code == 3, e  # "Value too large"
assert bm.get("bm-n") == 0, "the connection stays usable after a refused item"
assert bm.stats()
print("python-binary-memcached with credentials: ok")

print("all python clients through the proxy: ok")
