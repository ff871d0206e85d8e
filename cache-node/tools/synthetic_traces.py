#!/usr/bin/env python3
"""Writes the synthetic key traces that check the store's policy off the six reference traces, in
the traces' xz format (big-endian u32 keys). None of them sets a target; they are where a policy
tuned on the reference traces could be wrong (STORE.md, "Off the reference traces"). Each set
has its own fixed seed, so the files are the same on every run:

- zipf (seed 11): Zipf popularity, s = 0.6, 0.8, 1.0, 1.2, over 200,000 keys (ranks shuffled),
  1,000,000 accesses each;
- heldout (seed 7): `phases` (20 phases of 50,000 accesses over a 12,000-key range that moves
  5,000 keys a phase, plus 30% of accesses to 500 Zipf(1.0) hot keys), `zipf09` (Zipf 0.9 over
  100,000 keys) and `zipfloop` (half Zipf 0.8 over 50,000 keys, half a loop over 30,000 others);
- val (seed 2026), written after the policy was changed, to check it: `zipf09_500k` (Zipf 0.9
  over 500,000 keys, 1,500,000 accesses), `zipf10_churn` (Zipf 1.0 whose ranking moves 20,000
  keys every 100,000 accesses), `phases2` (30 phases of 30,000 accesses over 8,000 keys moving
  3,000 a phase, 10% to 1,000 Zipf(0.8) hot keys), `zipf07_onehit` (70% Zipf 0.7 over 300,000
  keys, 30% keys used once).

    python3 cache-node/tools/synthetic_traces.py OUT_DIR    # writes OUT_DIR/{zipf,heldout,val}/
    cargo bench -p cache-node --bench hitrate -- OUT_DIR/zipf
"""
import bisect
import itertools
import lzma
import os
import random
import struct
import sys


def write(path, keys):
    with lzma.open(path, 'wb', preset=1) as f:
        f.write(struct.pack('>%dI' % len(keys), *keys))


def zipf(r, n, s):
    """A sampler of ranks 0..n-1 with Zipf(s) popularity (inverse CDF over the cumulative weights),
    drawing from the random stream `r`."""
    c, t = [], 0.0
    for i in range(n):
        t += 1.0 / (i + 1) ** s
        c.append(t)
    return lambda: bisect.bisect_left(c, r.random() * t)


def phased(r, phases, per_phase, shift, width, hot_share, hot, hot_base):
    """Phases of `per_phase` accesses over a `width`-key range that moves `shift` keys a phase, with
    `hot_share` of the accesses going to `hot_base` + a rank drawn by `hot`."""
    keys = []
    for p in range(phases):
        for _ in range(per_phase):
            if r.random() < hot_share:
                keys.append(hot_base + hot())
            else:
                keys.append(p * shift + r.randrange(width))
    return keys


def mixed(r, accesses, share, draw, others):
    """`accesses` keys: with probability `share` one from `draw()`, else the next of the iterator
    `others`."""
    return [draw() if r.random() < share else next(others) for _ in range(accesses)]


def zipf_set(out):
    r = random.Random(11)
    for s in (0.6, 0.8, 1.0, 1.2):
        draw = zipf(r, 200000, s)
        perm = list(range(200000))
        r.shuffle(perm)
        keys = [perm[draw()] for _ in range(1000000)]
        write(os.path.join(out, 'zipf%02d.trace.xz' % int(s * 10)), keys)


def heldout_set(out):
    r = random.Random(7)
    draw = zipf(r, 100000, 0.9)
    write(os.path.join(out, 'zipf09.trace.xz'), [draw() for _ in range(1000000)])
    write(os.path.join(out, 'phases.trace.xz'),
          phased(r, 20, 50000, 5000, 12000, 0.3, zipf(r, 500, 1.0), 1000000))
    loop = itertools.cycle(range(2000000, 2030000))
    write(os.path.join(out, 'zipfloop.trace.xz'),
          mixed(r, 1000000, 0.5, zipf(r, 50000, 0.8), loop))


def val_set(out):
    r = random.Random(2026)
    draw = zipf(r, 500000, 0.9)
    write(os.path.join(out, 'zipf09_500k.trace.xz'), [draw() for _ in range(1500000)])
    draw = zipf(r, 100000, 1.0)
    write(os.path.join(out, 'zipf10_churn.trace.xz'),
          [draw() + (i // 100000) * 20000 for i in range(1000000)])
    write(os.path.join(out, 'phases2.trace.xz'),
          phased(r, 30, 30000, 3000, 8000, 0.1, zipf(r, 1000, 0.8), 5000000))
    write(os.path.join(out, 'zipf07_onehit.trace.xz'),
          mixed(r, 1000000, 0.7, zipf(r, 300000, 0.7), itertools.count(10000000)))


def main():
    out = sys.argv[1]
    for name, make in (('zipf', zipf_set), ('heldout', heldout_set), ('val', val_set)):
        os.makedirs(os.path.join(out, name), exist_ok=True)
        make(os.path.join(out, name))


if __name__ == '__main__':
    main()
