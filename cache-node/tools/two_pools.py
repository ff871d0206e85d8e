#!/usr/bin/env python3
"""Checks the claim STORE.md makes about lirs_2_pools: that its cold half gives no policy anything to
learn, so which full policy lands higher there is the trace's draw. Not part of the store or the bench.

    python3 cache-node/tools/two_pools.py [lirs_2_pools.trace.gz]

Prints:
- the hot keys (accessed more than 200 times) and the cold keys, and how many accesses each half has;
- the LRU stack distance of every cold reuse, counted among cold keys only, in buckets of 100 up to
  2,000, as a ratio to the mean bucket. Any recency a policy could use would show as a slope (more
  reuses at short distances); i.i.d. uniform draws give a flat histogram;
- LRU at capacity = 10% of the distinct keys: its hot and cold hits, and the cold hits it should
  expect for what it held, the sum over cold accesses of (cold keys held) / (cold keys). On a
  uniform cold pool every policy that keeps the hot keys and stays full expects the same, and the
  realized minus expected is the draw.
"""
import math
import sys
from collections import Counter, OrderedDict

from arc import load

HOT_ABOVE = 200
BUCKET = 100
BUCKETS = 20


def cold_stack_distances(cold):
    """Distinct cold keys accessed between each cold reuse and the key's previous access (a Fenwick
    tree over access times, each key counted at its latest access only)."""
    n = len(cold)
    tree = [0] * (n + 1)

    def add(i, v):
        i += 1
        while i <= n:
            tree[i] += v
            i += i & -i

    def prefix(i):
        i += 1
        s = 0
        while i > 0:
            s += tree[i]
            i -= i & -i
        return s

    last, dist = {}, []
    for t, k in enumerate(cold):
        if k in last:
            p = last[k]
            dist.append(prefix(t - 1) - prefix(p))
            add(p, -1)
        last[k] = t
        add(t, 1)
    return dist


def lru_hot_cold(keys, hot, cold_keys, cap):
    """LRU's hot hits, cold hits, and the mean and standard deviation of the cold hits to expect
    for the cold keys it held (each cold access a Bernoulli draw)."""
    cache, held_cold = OrderedDict(), 0
    hot_hits = cold_hits = 0
    expected = variance = 0.0
    for k in keys:
        is_hot = k in hot
        if not is_hot:
            p = held_cold / cold_keys
            expected += p
            variance += p * (1 - p)
        if k in cache:
            cache.move_to_end(k)
            if is_hot:
                hot_hits += 1
            else:
                cold_hits += 1
            continue
        cache[k] = None
        held_cold += not is_hot
        if len(cache) > cap:
            victim, _ = cache.popitem(last=False)
            held_cold -= victim not in hot
    return hot_hits, cold_hits, expected, math.sqrt(variance)


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else 'lirs_2_pools.trace.gz'
    keys = load(name)
    counts = Counter(keys)
    hot = {k for k, c in counts.items() if c > HOT_ABOVE}
    cold = [k for k in keys if k not in hot]
    cold_keys = len(counts) - len(hot)
    cap = len(counts) // 10
    print(f'{name}: {len(keys)} accesses, {len(hot)} hot keys ({len(keys) - len(cold)} accesses), '
          f'{cold_keys} cold keys ({len(cold)} accesses); capacity {cap}')

    dist = cold_stack_distances(cold)
    by_bucket = Counter(d // BUCKET for d in dist)
    per_bucket = [by_bucket[b] for b in range(BUCKETS)]
    mean = sum(per_bucket) / BUCKETS
    if mean == 0:
        sys.exit(f'no cold reuses within a stack distance of {BUCKET * BUCKETS}: not a two-pool trace')
    print(f'cold reuses {len(dist)}; per {BUCKET} of stack distance, 0 to {BUCKET * BUCKETS}: '
          f'{min(per_bucket)}-{max(per_bucket)} (ratio to the mean '
          f'{min(per_bucket) / mean:.2f}-{max(per_bucket) / mean:.2f})')
    print('  ' + ' '.join(f'{c / mean:.2f}' for c in per_bucket))

    hot_hits, cold_hits, expected, sd = lru_hot_cold(keys, hot, cold_keys, cap)
    print(f'LRU: {hot_hits + cold_hits} hits ({100 * (hot_hits + cold_hits) / len(keys):.2f}%), '
          f'hot {hot_hits}, cold {cold_hits}; expected cold hits for what it held {expected:.0f} '
          f'(sd about {sd:.0f}): realized - expected {cold_hits - expected:+.0f} '
          f'({(cold_hits - expected) / sd:+.2f} sd); expected total '
          f'{100 * (hot_hits + expected) / len(keys):.2f}%')


if __name__ == '__main__':
    main()
