"""The meta-memcache client (PyPI) through the sidecar: its herd-control API
(leases, stale-on-delete, recache, CAS writes, deltas) must behave as it does
against memcached. Usage: proxy_meta_memcache.py HOST:PORT"""

import sys

from meta_memcache import (
    CacheClient,
    LeasePolicy,
    RecachePolicy,
    ServerAddress,
    StalePolicy,
    connection_pool_factory_builder,
)

host, port = sys.argv[1].rsplit(":", 1)
client = CacheClient.cache_client_from_servers(
    servers=[ServerAddress(host=host, port=int(port))],
    connection_pool_factory_fn=connection_pool_factory_builder(recv_timeout=5),
)
no_wait = LeasePolicy(ttl=30, miss_retries=1, miss_retry_wait=0.01)


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


# Leases: the first miss wins the lease (a Miss), the next one sees the
# empty leased item and, after its retries, a miss too; once the winner
# fills it, everyone reads the value.
check("lease winner", client.get_or_lease("lease", no_wait), None)
check("lease loser", client.get_or_lease("lease", no_wait), None)
check("refill", client.set("lease", "filled", ttl=60), True)
check("after refill", client.get_or_lease("lease", no_wait), "filled")
print("get_or_lease: ok")

# Stale on delete: the item stays readable, stale; one client wins the
# recache (it reads a miss), the others keep the stale value.
stale = StalePolicy(mark_stale_on_deletion_ttl=30)
check("set", client.set("stale", "v1", ttl=60), True)
check("stale delete", client.delete("stale", stale_policy=stale), True)
check("recache winner", client.get("stale"), None)
check("stale value for the rest", client.get("stale"), "v1")
check("refresh", client.set("stale", "v2", ttl=60), True)
check("fresh again", client.get("stale"), "v2")
check("invalidate", client.invalidate("stale", stale_policy=stale), True)
print("stale on delete: ok")

# Recache: with little TTL left, one client wins the recache.
check("short ttl", client.set("recache", "old", ttl=20), True)
recache = RecachePolicy(ttl=30)
check("recache winner", client.get("recache", recache_policy=recache), None)
check("recache loser", client.get("recache", recache_policy=recache), "old")
print("RecachePolicy: ok")

# CAS writes.
cas = client.set_cas("cas", "a", ttl=60)
if not isinstance(cas, int):
    sys.exit(f"set_cas returned {cas!r}")
value, read_cas = client.get_cas("cas")
check("get_cas", (value, read_cas), ("a", cas))
check("stale cas refused", client.set("cas", "x", ttl=60, cas_token=cas + 1000), False)
check("cas write", client.set("cas", "b", ttl=60, cas_token=cas), True)
check("after cas", client.get("cas"), "b")
check("delete with wrong cas", client.delete("cas", cas_token=cas), False)
print("set_cas: ok")

# Deltas.
check("delta on a miss", client.delta("n", 1), False)
check("delta_initialize", client.delta_initialize("n", 5, 10, initial_ttl=60), True)
check("delta_and_get", client.delta_and_get("n", 5), 15)
check("delta down", client.delta_and_get("n", -20), 0)
check("initialize and get", client.delta_initialize_and_get("m", 1, 7, 60), 7)
print("deltas: ok")

client.set("multi1", "one", ttl=60)
got = {k.key: v for k, v in client.multi_get(["multi1", "multi-miss"]).items()}
check("multi_get", got, {"multi1": "one", "multi-miss": None})
print("meta-memcache through the proxy: ok")
