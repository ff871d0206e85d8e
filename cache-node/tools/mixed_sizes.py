#!/usr/bin/env python3
"""Cache-aside with mixed value sizes, cache-node beside memcached 1.6.18 over TCP (STORE.md, "Mixed
sizes under churn"). Each server is started on a free loopback port with the same `-m` and `-t 2`;
THREADS connections each run ACCESSES accesses: `get k`, and on a miss `set k` with a size fixed per key
(log-uniform 100..10,000 B, uniform 100..10,000 B, or N bytes). Popularity is uniform over KEYS keys or
Zipf. Prints each server's hit rate over the second half of every connection's accesses, the items it
keeps, its resident set after the load and, by `mg KEY k q` over every key, the share of each size
band's keys it keeps (bands of a tenth of the keys by size). The same `-m` does not give the same RSS:
cache-node counts its index and policy tables in its budget, memcached's `-m` bounds only its slab
pages; `--ours-mb` gives cache-node another `-m`, to compare the two at equal RSS. `cargo run
--release -p cache-node --example mixed_sizes` replays the same load in process, without memcached.

    cargo build --release -p cache-node
    python3 cache-node/tools/mixed_sizes.py [--zipf 0.9] [--sizes loguniform|uniform|N] [--mb 64]
        [--ours-mb MB] [--keys 200000] [--accesses 300000] [--threads 3]

Needs `memcached` (scripts/setup installs it). About a minute per server at the defaults.
"""
import argparse
import bisect
import random
import socket
import subprocess
import threading
import zlib

from loopback import free_port, wait_listening

ap = argparse.ArgumentParser()
ap.add_argument('--keys', type=int, default=200000)
ap.add_argument('--zipf', type=float, default=0.0)
ap.add_argument('--sizes', default='loguniform')
ap.add_argument('--accesses', type=int, default=300000, help='per connection')
ap.add_argument('--threads', type=int, default=3)
ap.add_argument('--mb', type=int, default=64)
ap.add_argument('--ours-mb', type=int, help="cache-node's -m, if not --mb (to compare at equal RSS)")
args = ap.parse_args()


def size_of(k):
    h = zlib.crc32(str(k).encode()) / 2**32
    if args.sizes == 'loguniform':
        return int(100 * (100 ** h))
    if args.sizes == 'uniform':
        return int(100 + 9900 * h)
    return int(args.sizes)


if args.zipf > 0:
    cdf, total = [], 0.0
    for i in range(args.keys):
        total += 1 / (i + 1) ** args.zipf
        cdf.append(total)

    def draw(rnd):
        return bisect.bisect_left(cdf, rnd.random() * total)
else:
    def draw(rnd):
        return rnd.randrange(args.keys)


def connect(port):
    s = socket.create_connection(('127.0.0.1', port))
    s.settimeout(10)
    # A get after a noreply set: without this, Nagle and delayed acks hold each exchange ~40 ms.
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def load(port, seed, out):
    rnd = random.Random(seed)
    s = connect(port)
    f = s.makefile('rb')
    hits = reads = 0
    for i in range(args.accesses):
        k = draw(rnd)
        s.sendall(f'get k{k}\r\n'.encode())
        line = f.readline()
        hit = line.startswith(b'VALUE')
        if hit:
            f.read(int(line.split()[3]) + 2)
            f.readline()  # END
        else:
            n = size_of(k)
            s.sendall(f'set k{k} 0 0 {n} noreply\r\n'.encode() + b'x' * n + b'\r\n')
        if i >= args.accesses // 2:
            reads += 1
            hits += hit
    out.append((hits, reads))


def kept_keys(port):
    """The keys the server holds, by `mg KEY k q` in pipelined batches closed by `mn`."""
    s = connect(port)
    f = s.makefile('rb')
    kept = set()
    for start in range(0, args.keys, 1000):
        batch = ''.join(f'mg k{k} k q\r\n' for k in range(start, min(start + 1000, args.keys)))
        s.sendall((batch + 'mn\r\n').encode())
        while (line := f.readline()) != b'MN\r\n':
            kept.add(int(line.split()[1][2:]))  # "HD kk123"
    return kept


def rss_mib(pid):
    """The server's resident set now and at its peak (VmRSS, VmHWM), in MiB."""
    with open(f'/proc/{pid}/status') as status:
        fields = dict(line.split(':', 1) for line in status)
    return tuple(int(fields[f].split()[0]) / 1024 for f in ('VmRSS', 'VmHWM'))


SERVERS = {
    'cache-node': ['target/release/cache-node', '-m', str(args.ours_mb or args.mb), '-t', '2'],
    'memcached': ['memcached', '-u', 'nobody', '-m', str(args.mb), '-t', '2', '-l', '127.0.0.1'],
}
by_size = sorted(range(args.keys), key=size_of)
bands = [by_size[i:i + args.keys // 10] for i in range(0, args.keys, args.keys // 10)]
for name, cmd in SERVERS.items():
    port = free_port()
    server = subprocess.Popen(cmd + ['-p', str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, 10)
        out = []
        threads = [threading.Thread(target=load, args=(port, i + 1, out)) for i in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        hits, reads = map(sum, zip(*out))
        kept = kept_keys(port)
        shares = ', '.join(f'{size_of(b[0])}-{size_of(b[-1])} B {100 * sum(k in kept for k in b) / len(b):.1f}%'
                           for b in bands)
        data = sum(size_of(k) + len(f'k{k}') for k in kept)
        rss = rss_mib(server.pid)
        print(f'{name:10s} hit rate {100 * hits / reads:6.2f}%  items {len(kept)}  keys+values {data / 2**20:.1f} MiB'
              f'  RSS {rss[0]:.1f} MiB (peak {rss[1]:.1f})')
        print(f'{"":10s} kept by size: {shares}', flush=True)
    finally:
        server.kill()
        server.wait()
