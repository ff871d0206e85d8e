#!/usr/bin/env python3
"""ARC (Megiddo and Modha, FAST 2003) hit rate on the key traces, as a reference point for
cache-node/STORE.md (sprite: ARC 85.50 against LRU 86.48 at 10% capacity). A plain simulation
of the paper's algorithm, not part of the store or the bench.

    python3 cache-node/tools/arc.py lirs_sprite.trace.gz [more traces]   (names under ../shared/traces beside the checkout)
"""
import gzip
import os
import lzma
import struct
import sys
from collections import OrderedDict


def load(name):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), '../../../shared/traces', name)
    if path.endswith('.gz'):
        return [int(l) for l in gzip.open(path, 'rt') if l.strip() and l.strip() != '*']
    data = lzma.open(path).read()
    return list(struct.unpack('>%dI' % (len(data) // 4), data))


def arc_hits(keys, c):
    t1, t2, b1, b2 = OrderedDict(), OrderedDict(), OrderedDict(), OrderedDict()
    p = 0.0
    hits = 0

    def replace(x):
        if t1 and (len(t1) > p or (x in b2 and len(t1) == p)):
            k, _ = t1.popitem(last=False)
            b1[k] = 1
        else:
            k, _ = t2.popitem(last=False)
            b2[k] = 1

    for x in keys:
        if x in t1:
            del t1[x]
            t2[x] = 1
            hits += 1
        elif x in t2:
            t2.move_to_end(x)
            hits += 1
        elif x in b1:
            p = min(c, p + max(len(b2) / len(b1), 1))
            replace(x)
            del b1[x]
            t2[x] = 1
        elif x in b2:
            p = max(0, p - max(len(b1) / len(b2), 1))
            replace(x)
            del b2[x]
            t2[x] = 1
        else:
            if len(t1) + len(b1) == c:
                if len(t1) < c:
                    b1.popitem(last=False)
                    replace(x)
                else:
                    t1.popitem(last=False)
            elif len(t1) + len(t2) + len(b1) + len(b2) >= c:
                if len(t1) + len(t2) + len(b1) + len(b2) == 2 * c:
                    b2.popitem(last=False)
                replace(x)
            t1[x] = 1
    return hits


if __name__ == '__main__':
    for name in sys.argv[1:]:
        keys = load(name)
        cap = len(set(keys)) // 10
        print('%s cap %d ARC %.2f' % (name, cap, 100 * arc_hits(keys, cap) / len(keys)))
