"""Real Python clients through the memgate sidecar.

Usage: proxy_clients.py PROXY_ADDR

None of them needs TLS or a login; the ones configured with credentials
(pylibmc binary + SASL, python-binary-memcached) or ASCII auth (pymemcache)
must work unchanged, because the sidecar accepts any client login.
"""
import sys

import bmemcached
import pylibmc
from pymemcache.client.base import Client as PyMemcache

addr = sys.argv[1]
host, port = addr.rsplit(":", 1)
port = int(port)


def check_pylibmc(client, label):
    data = {f"{label}-{i}": f"v{i}" * (i + 1) for i in range(100)}
    client.set_multi(data)
    assert client.get_multi(list(data)) == data, label
    client["big"] = "x" * 500_000
    assert client["big"] == "x" * 500_000
    client.set("n", 10)
    assert client.incr("n", 5) == 15
    client.delete(f"{label}-0")
    assert client.get(f"{label}-0") is None
    try:
        client.set("huge", "y" * (1024 * 1024 + 100))
        raise AssertionError("over-size value accepted")
    except pylibmc.Error:
        pass
    print(f"pylibmc {label}: ok")


check_pylibmc(pylibmc.Client([addr]), "text")
check_pylibmc(pylibmc.Client([addr], binary=True), "binary")
check_pylibmc(pylibmc.Client([addr], binary=True, username="app", password="stale-password"), "binary-sasl")

# pymemcache: plain, then with MemCachier's ASCII login as its first command.
plain = PyMemcache((host, port))
assert plain.set("pm", b"1", noreply=False)
assert plain.get("pm") == b"1"
authed = PyMemcache((host, port))
assert authed.set(sys.argv[2], sys.argv[3].encode(), noreply=False), "ASCII login refused"
assert authed.get("pm") == b"1"
assert authed.get(sys.argv[2]) is None, "the login must not be stored as a key"
print("pymemcache: ok")

bm = bmemcached.Client([addr], "anyone", "anything")
assert bm.set("bm", {"a": 1})
assert bm.get("bm") == {"a": 1}
assert bm.get_multi(["bm", "missing"]) == {"bm": {"a": 1}}
print("python-binary-memcached: ok")
print("all python clients through the proxy: ok")
