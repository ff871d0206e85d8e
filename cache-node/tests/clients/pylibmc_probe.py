"""pylibmc (libmemcached's C client under Python), unchanged: run by tests/clients.rs as `python3 THIS PORT`
against memcached and against cache-node, whose outputs must be the same.

Prints one line per call: the client behaviours, the call, and its result or the exception it raised.
Four behaviour sets: the defaults; CAS support with TCP_NODELAY; libmemcached's no_block with buffered
requests (writes are pipelined and their replies read later); no_block with CAS.
"""
import sys

import pylibmc

port = sys.argv[1]
BEHAVIOURS = (
    {},
    {"cas": True, "tcp_nodelay": True},
    {"no_block": True, "buffer_requests": True},
    {"cas": True, "no_block": True},
)
for behaviours in BEHAVIOURS:
    mc = pylibmc.Client(["127.0.0.1:" + port], binary=False, behaviors=behaviours)

    def call(name, f):
        try:
            result = repr(f())
        except pylibmc.Error as e:
            # The type says what happened; the message carries libmemcached's socket-level detail (an
            # errno), which depends on how fast the server answered a refused write.
            result = "raises " + type(e).__name__
        except Exception as e:
            result = "raises " + type(e).__name__ + " " + str(e)
        print(behaviours, name, result)

    call("flush_all", lambda: mc.flush_all())
    call("set", lambda: mc.set("a", "1"))
    call("get", lambda: mc.get("a"))
    call("set int", lambda: mc.set("i", 5))
    call("get int", lambda: mc.get("i"))
    call("incr", lambda: mc.incr("i", 3))
    call("decr below zero", lambda: mc.decr("i", 10))
    call("incr missing", lambda: mc.incr("nope", 1))
    call("add existing", lambda: mc.add("a", "2"))
    call("add new", lambda: mc.add("b", "2"))
    call("replace", lambda: mc.replace("b", "3"))
    call("replace missing", lambda: mc.replace("zz", "3"))
    call("append", lambda: mc.append("b", "4"))
    call("prepend", lambda: mc.prepend("b", "5"))
    call("get appended", lambda: mc.get("b"))
    call("set_multi", lambda: mc.set_multi({"m1": "x", "m2": "y", "m3": [1, 2]}))
    call("get_multi", lambda: sorted(mc.get_multi(["m1", "m2", "m3", "missing"]).items()))
    call("delete_multi", lambda: mc.delete_multi(["m1", "m2", "nope"]))
    call("gets", lambda: mc.gets("b")[0])
    call("cas with gets token", lambda: mc.cas("b", "6", mc.gets("b")[1]))
    call("cas with a wrong token", lambda: mc.cas("b", "7", 123456789))
    call("get after cas", lambda: mc.get("b"))
    call("touch", lambda: mc.touch("b", 100))
    call("touch missing", lambda: mc.touch("nope", 100))
    call("delete", lambda: mc.delete("b"))
    call("delete missing", lambda: mc.delete("b"))
    call("set 2 MiB", lambda: mc.set("big", "x" * (2 << 20)))
    call("get after 2 MiB", lambda: mc.get("a"))
    call("set 1 MiB - 1 KiB", lambda: mc.set("large", "y" * ((1 << 20) - 1024)))
    call("get 1 MiB - 1 KiB", lambda: len(mc.get("large") or ""))
    call("set 251-byte key", lambda: mc.set("k" * 251, "v"))
    call("set 250-byte key", lambda: mc.set("k" * 250, "v"))
    call("get 250-byte key", lambda: mc.get("k" * 250))
    call("stats names", lambda: sorted(k for k in mc.get_stats()[0][1] if k in ("curr_items", "get_hits", "cmd_set")))
    call("utf-8 key", lambda: mc.set("\u00fc", "v"))
    call("get utf-8 key", lambda: mc.get("\u00fc"))
    call("final get", lambda: mc.get("a"))
