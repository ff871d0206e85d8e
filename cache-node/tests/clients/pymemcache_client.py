"""pymemcache, unchanged, against a cache-node: run by tests/clients.rs as `python3 THIS PORT`.

Exercises the client's whole text-protocol surface with its defaults (noreply on for every storage
command and delete, so a stray reply line would desynchronise it) and with noreply off, pipelined
multi-key calls, a value refused as too large, and the connection staying in sync after each error.
Exits non-zero, with the failed assertion, on the first difference from what memcached answers.
"""
import sys

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError, MemcacheClientError, MemcacheIllegalInputError

port = int(sys.argv[1])
c = Client(("127.0.0.1", port), connect_timeout=5, timeout=5)  # default_noreply=True, as shipped

assert c.version().startswith(b"1.6"), c.version()
assert c.flush_all(noreply=False) is True

# Storage commands with pymemcache's default noreply=True: they answer True without reading a reply.
assert c.set("a", b"1") is True
assert c.get("a") == b"1"
assert c.set("f", b"flagged", expire=0) is True
assert c.add("a", b"2") is True  # noreply: the client cannot know it was refused...
assert c.get("a") == b"1"  # ...but the server kept the old value
assert c.add("a", b"2", noreply=False) is False
assert c.add("b", b"2", noreply=False) is True
assert c.replace("b", b"3") is True
assert c.replace("nope", b"3", noreply=False) is False
assert c.append("b", b"4") is True
assert c.prepend("b", b"5") is True
assert c.get("b") == b"534"
assert c.append("nope", b"x", noreply=False) is False

# Multi-key reads and writes.
assert c.set_many({"m1": b"v1", "m2": b"v2", "m3": b"v3"}) == []
assert c.get_many(["m1", "m2", "m3", "missing"]) == {"m1": b"v1", "m2": b"v2", "m3": b"v3"}
assert c.delete_many(["m1", "m2"]) is True
assert c.get_many(["m1", "m2", "m3"]) == {"m3": b"v3"}

# CAS.
value, token = c.gets("b")
assert value == b"534" and token is not None
assert c.cas("b", b"6", token, noreply=False) is True
assert c.cas("b", b"7", token, noreply=False) is False  # the token is used up
assert c.cas("nope", b"7", token, noreply=False) is None
assert c.get("b") == b"6"
got = c.gets_many(["a", "b"])
assert set(got) == {"a", "b"} and got["b"][0] == b"6", got

# Counters.
assert c.set("n", b"10") is True
assert c.incr("n", 5, noreply=False) == 15
assert c.decr("n", 20, noreply=False) == 0  # decr stops at zero
assert c.incr("nope", 1, noreply=False) is None
assert c.incr("n", 7, noreply=True) is None
assert int(c.get("n")) == 7  # memcached pads a shrunk counter with spaces ("7 "); cache-node does not
assert c.set("txt", b"abc") is True
try:
    c.incr("txt", 1, noreply=False)
    raise AssertionError("incr on a non-numeric value must fail")
except MemcacheClientError as e:
    assert b"non-numeric" in str(e).encode(), e
assert int(c.get("n")) == 7  # in sync after the error

# Touch (pymemcache 3.5 has no gat), delete.
assert c.touch("a", 3600, noreply=False) is True
assert c.touch("nope", 3600, noreply=False) is False
assert c.touch("a", 0) is True
assert c.delete("a", noreply=False) is True
assert c.delete("a", noreply=False) is False
assert c.get("a") is None

# Values: binary bytes and one just under the 1 MiB item limit; one over it is refused and the
# connection stays usable.
blob = bytes(range(256)) * 4
assert c.set("bin", blob, noreply=False) is True
assert c.get("bin") == blob
big = b"x" * (1024 * 1024 - 512)
assert c.set("big", big, noreply=False) is True
assert c.get("big") == big
try:
    c.set("huge", b"y" * (2 * 1024 * 1024), noreply=False)
    raise AssertionError("a 2 MiB value must be refused")
except MemcacheServerError as e:
    assert "too large" in str(e), e
assert c.get("huge") is None
assert c.get("big") == big
# With noreply the same refusal is silent, as in memcached, and the client stays in sync.
assert c.set("huge", b"y" * (2 * 1024 * 1024)) is True
assert c.get("bin") == blob

# The client refuses bad keys itself; the server's limit is the same 250 bytes.
assert c.set("k" * 250, b"long", noreply=False) is True
assert c.get("k" * 250) == b"long"
try:
    c.set("k" * 251, b"x")
    raise AssertionError("a 251-byte key must be refused")
except MemcacheIllegalInputError:
    pass

# Stats, as pymemcache parses them into numbers.
stats = c.stats()
for name in (b"curr_items", b"total_items", b"bytes", b"limit_maxbytes", b"get_hits", b"get_misses",
             b"cmd_get", b"cmd_set", b"cmd_touch", b"curr_connections", b"total_connections", b"evictions"):
    assert name in stats, name
assert stats[b"get_hits"] > 0 and stats[b"cmd_set"] > 0, stats
settings = c.stats("settings")
assert b"item_size_max" in settings and b"maxconns" in settings, settings

# flush_all with a delay answers OK and keeps the items until then.
assert c.flush_all(delay=3600, noreply=False) is True
assert c.get("bin") == blob
assert c.flush_all(noreply=False) is True
assert c.get("bin") is None

c.quit()
print("pymemcache ok")
