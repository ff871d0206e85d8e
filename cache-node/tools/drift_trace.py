#!/usr/bin/env python3
"""Writes a synthetic key trace with a drifting working set, in the traces' xz format (big-endian u32
keys), for checking that the store's policy generalises beyond the six reference traces. It is not one
of them, and it does not set a target.

Access i goes to key i // 4 + r, with r uniform in [0, SPAN) (xorshift64, fixed seed). The working set
is SPAN keys wide and slides by one key every 4 accesses. So each key gets about 4 accesses in its life,
all within a stretch LRU keeps. LRU is optimal here at the bench's capacity (10% of the distinct keys);
a frequency filter only gets in the way. Recorded in STORE.md (2026-11-29): at SPAN 1,000 and 200,000
accesses LRU 75.23, ours 72.65; at SPAN 20,000 and 2,000,000 accesses LRU 74.93, ours 69.13.

    python3 cache-node/tools/drift_trace.py SPAN ACCESSES OUT_DIR/drift.trace.xz
    cargo bench -p cache-node --bench hitrate -- OUT_DIR
"""
import lzma
import struct
import sys


def main():
    span, accesses, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    mask = (1 << 64) - 1
    rng = 0x9E3779B97F4A7C15
    keys = []
    for i in range(accesses):
        rng ^= (rng << 13) & mask
        rng ^= rng >> 7
        rng ^= (rng << 17) & mask
        keys.append((i // 4 + rng % span) & 0xFFFFFFFF)
    with lzma.open(out, 'wb', preset=1) as f:
        f.write(struct.pack('>%dI' % accesses, *keys))


if __name__ == '__main__':
    main()
