#!/usr/bin/env python3
"""LIRS, CLOCK-Pro and segmented LRU hit rates on the key traces at capacity = 10% of the
distinct keys: the reference points behind cache-node/STORE.md's notes on lirs_sprite (none of the
recency/reuse-distance policies beats LRU there without losing multi2, gli and loop). Plain
simulations of the papers' algorithms, not part of the store or the bench.

    python3 cache-node/tools/recency_policies.py lirs_sprite.trace.gz [more traces]

- LIRS (Jiang and Zhang, SIGMETRICS 2002): stack S of LIR and HIR keys (pruned so its bottom is
  LIR, bounded to 3 x capacity entries), queue Q of resident HIR keys, at 1/5/10/20/30% of the
  capacity for HIR keys;
- CLOCK-Pro (Jiang, Chen and Zhang, USENIX ATC 2005): one clock with hot, cold and test hands,
  the resident cold share adapting between 1% and all of the capacity, non-resident test keys
  bounded by the capacity;
- SLRU: a probationary and a protected LRU (protected share 20/40/50%), a hit in probation
  promotes, the protected overflow returns to probation's most recent end.
"""
import sys
from collections import OrderedDict

from arc import load


def lru_hits(keys, c):
    cache, hits = OrderedDict(), 0
    for x in keys:
        if x in cache:
            cache.move_to_end(x)
            hits += 1
        else:
            cache[x] = 1
            if len(cache) > c:
                cache.popitem(last=False)
    return hits


def slru_hits(keys, c, protected_share):
    probation, protected = OrderedDict(), OrderedDict()
    protected_max = int(c * protected_share)
    hits = 0
    for x in keys:
        if x in protected:
            protected.move_to_end(x)
            hits += 1
        elif x in probation:
            hits += 1
            del probation[x]
            protected[x] = 1
            if len(protected) > protected_max:
                k, _ = protected.popitem(last=False)
                probation[k] = 1
        else:
            probation[x] = 1
            if len(probation) + len(protected) > c:
                probation.popitem(last=False)
    return hits


def lirs_hits(keys, c, hir_share):
    hir_max = max(1, int(c * hir_share))
    lir_max = c - hir_max
    stack = OrderedDict()  # S, most recent last
    queue = OrderedDict()  # Q: resident HIR keys
    state = {}  # 'L' LIR, 'H' resident HIR, 'N' non-resident HIR still in S
    lir_count, hits = 0, 0

    def prune():
        while stack:
            k = next(iter(stack))
            if state.get(k) == 'L':
                break
            del stack[k]
            if state.get(k) == 'N':
                del state[k]

    def make_lir(x):
        # x becomes LIR at the top of S; the bottom LIR key becomes a resident HIR key.
        state[x] = 'L'
        stack[x] = 1
        stack.move_to_end(x)
        k = next(iter(stack))
        state[k] = 'H'
        queue[k] = 1
        del stack[k]
        prune()

    for x in keys:
        st = state.get(x)
        if st == 'L':
            hits += 1
            stack.move_to_end(x)
            prune()
            continue
        if st == 'H':
            hits += 1
            if x in stack:
                del queue[x]
                make_lir(x)
            else:
                stack[x] = 1
                queue.move_to_end(x)
            continue
        if lir_count < lir_max:  # filling
            state[x] = 'L'
            lir_count += 1
            stack[x] = 1
            continue
        if len(queue) >= hir_max:
            k, _ = queue.popitem(last=False)
            if k in stack:
                state[k] = 'N'
            else:
                del state[k]
        if st == 'N' and x in stack:
            make_lir(x)
        else:
            state[x] = 'H'
            queue[x] = 1
            stack[x] = 1
            stack.move_to_end(x)
        if len(stack) > 3 * c:  # bound S: forget the oldest non-resident entry
            for k in stack:
                if state.get(k) == 'N':
                    del stack[k]
                    del state[k]
                    break
    return hits


class _Page:
    __slots__ = ('key', 'prev', 'next', 'hot', 'resident', 'ref', 'test')


def clock_pro_hits(keys, c):
    pages = {}
    hands = {'hot': None, 'cold': None, 'test': None}
    counts = {'hot': 0, 'cold': 0, 'nonresident': 0}
    cold_target = [max(1, c // 100)]
    hits = 0

    def link_before_hot_hand(p):
        # The clock's "head" (most recent position) is just behind the hot hand.
        at = hands['hot']
        if at is None:
            p.prev = p.next = p
            hands['hot'] = hands['cold'] = hands['test'] = p
            return
        p.next, p.prev = at, at.prev
        at.prev.next = p
        at.prev = p

    def unlink(p):
        if p.next is p:
            hands['hot'] = hands['cold'] = hands['test'] = None
            return
        for h in hands:
            if hands[h] is p:
                hands[h] = p.next
        p.prev.next = p.next
        p.next.prev = p.prev

    def end_test(p):
        # A cold page's test period ends without a reuse: shrink the cold target.
        p.test = False
        cold_target[0] = max(1, cold_target[0] - 1)
        if not p.resident:
            unlink(p)
            del pages[p.key]
            counts['nonresident'] -= 1
            return True
        return False

    def run_test_hand():
        while True:
            p = hands['test']
            if not p.hot and p.test and end_test(p):
                return
            if hands['test'] is p:
                hands['test'] = p.next

    def run_hot_hand():
        while True:
            p = hands['hot']
            if p.hot:
                hands['hot'] = p.next
                if p.ref:
                    p.ref = False
                else:
                    p.hot, p.test = False, False
                    counts['hot'] -= 1
                    counts['cold'] += 1
                    return
            elif p.test and end_test(p):
                continue
            else:
                hands['hot'] = p.next

    def run_cold_hand():
        while True:
            p = hands['cold']
            hands['cold'] = p.next
            if p.hot or not p.resident:
                continue
            if p.ref:
                p.ref = False
                unlink(p)
                link_before_hot_hand(p)
                if p.test:  # reused within its test period: hot
                    p.hot, p.test = True, False
                    counts['hot'] += 1
                    counts['cold'] -= 1
                    while counts['hot'] > c - cold_target[0] and counts['hot'] > 1:
                        run_hot_hand()
                else:
                    p.test = True
                continue
            p.resident = False
            counts['cold'] -= 1
            if p.test:
                counts['nonresident'] += 1
                while counts['nonresident'] > c:
                    run_test_hand()
            else:
                unlink(p)
                del pages[p.key]
            return

    for x in keys:
        p = pages.get(x)
        if p is not None and p.resident:
            hits += 1
            p.ref = True
            continue
        if counts['hot'] + counts['cold'] >= c:
            run_cold_hand()
            p = pages.get(x)  # the hands may have dropped its non-resident entry
        if p is not None:  # reuse within its test period: the cold share was too small
            cold_target[0] = min(c - 1, cold_target[0] + 1)
            unlink(p)
            counts['nonresident'] -= 1
            p.resident, p.hot, p.ref, p.test = True, True, False, False
            counts['hot'] += 1
            link_before_hot_hand(p)
            while counts['hot'] > c - cold_target[0] and counts['hot'] > 1:
                run_hot_hand()
            continue
        p = _Page()
        p.key, p.resident, p.ref = x, True, False
        if counts['hot'] < c - cold_target[0] and len(pages) < c:  # filling: hot first
            p.hot, p.test = True, False
            counts['hot'] += 1
        else:
            p.hot, p.test = False, True
            counts['cold'] += 1
        pages[x] = p
        link_before_hot_hand(p)
    return hits


def main():
    for name in sys.argv[1:]:
        keys = load(name)
        c = len(set(keys)) // 10
        pct = lambda h: '%.2f' % (100.0 * h / len(keys))
        row = ['LRU ' + pct(lru_hits(keys, c))]
        row += ['SLRU%d%% %s' % (s * 100, pct(slru_hits(keys, c, s))) for s in (0.2, 0.4, 0.5)]
        row += ['LIRS%d%% %s' % (s * 100, pct(lirs_hits(keys, c, s)))
                for s in (0.01, 0.05, 0.1, 0.2, 0.3)]
        row += ['CLOCK-Pro ' + pct(clock_pro_hits(keys, c))]
        print(name, c, ' '.join(row), flush=True)


if __name__ == '__main__':
    main()
