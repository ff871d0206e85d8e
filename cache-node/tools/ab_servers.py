#!/usr/bin/env python3
"""Closed-loop throughput and p99 of two cache-node builds side by side, for changes whose effect is
smaller than this machine's drift between runs (cache-node/SERVER.md, "Wake-ups between the ticks").
Both servers run at once on free loopback ports with the same flags; each round runs `mcload` (the
benchmark's load generator, 32 connections, 90% get / 10% set, 1 KB values) against one and then the
other, the order alternating, so drift hits both alike. Prints each round and then the median ratio
B/A, the rounds B won, a one-sided sign test, the median ratio by which server ran first in a round and
the geometric mean of all, the per-round ratios of each server's own user and system CPU
time per request (`/proc/PID/stat`; steadier than throughput for a change to the server's code), and each
server's `maintainer_wakeups`.
Not part of the tests; `mcbench` is the benchmark against memcached.

    cargo build --release -p cache-node        # the B build; copy the A build aside first
    python3 cache-node/tools/ab_servers.py A_BINARY B_BINARY [ROUNDS=40] [SECONDS=2]

A flag for one server only, to compare settings of one build (the same binary may be A and B):

    python3 cache-node/tools/ab_servers.py --b-args=--yield-when-idle target/release/cache-node target/release/cache-node

Another load, with flags for every `mcload` run (the cache-aside churn of `mcbench --read-through-sizes`):

    python3 cache-node/tools/ab_servers.py --memory-mb 64 \
        --load-args="--read-through --sizes 100:10000 --keys 200000" A_BINARY B_BINARY 20 3
"""
import argparse
import math
import os
import re
import socket
import statistics
import subprocess

from loopback import MCLOAD, cpu_ticks, prepopulated_servers

SERVER_FLAGS = ['-t', '2', '-c', '4096']


def stat(port, name):
    with socket.create_connection(('127.0.0.1', port), timeout=5) as s:
        s.sendall(b'stats\r\n')
        reply = b''
        while not reply.endswith(b'END\r\n'):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    m = re.search(rb'STAT ' + name.encode() + rb' (\d+)', reply)
    return int(m.group(1)) if m else None


WARMUP_S = 0.3


def load(server, seconds, extra):
    """One closed-loop run: (ops/s, p99 us, server user CPU us per request, server system CPU us per
    request). The CPU time covers the warm-up too, so the requests are scaled up to match."""
    before = cpu_ticks(server.pid)
    out = subprocess.run([MCLOAD, '--addr', f'127.0.0.1:{server.port}',
                          '--duration-secs', str(seconds), '--warmup-secs', str(WARMUP_S), *extra],
                         capture_output=True, text=True, check=True).stdout
    after = cpu_ticks(server.pid)
    fields = dict(re.findall(r'(\w+)=([\d.]+)', out))
    requests = float(fields['ops']) * (float(seconds) + WARMUP_S) / float(seconds)
    us_per_tick = 1e6 / os.sysconf('SC_CLK_TCK')
    user, system = ((a - b) * us_per_tick / requests for a, b in zip(after, before))
    return float(fields['ops_per_sec']), float(fields['p99_us']), user, system


def sign_test_p(wins, n):
    """P(at least `wins` of `n` fair coin flips come up heads)."""
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('a_binary')
    parser.add_argument('b_binary')
    parser.add_argument('rounds', nargs='?', type=int, default=40)
    parser.add_argument('seconds', nargs='?', default='2')
    parser.add_argument('--a-args', default='', help='extra flags for A only, space-separated')
    parser.add_argument('--b-args', default='', help='extra flags for B only, space-separated')
    parser.add_argument('--memory-mb', type=int, default=256, help="both servers' -m")
    parser.add_argument('--load-args', default='', help='extra flags for every mcload run, space-separated')
    args = parser.parse_args()
    rounds, seconds = args.rounds, args.seconds
    runs = [(args.a_binary, args.a_args.split()), (args.b_binary, args.b_args.split())]
    commands = [[b, '-p', '{port}', *SERVER_FLAGS, '-m', str(args.memory_mb), *extra] for b, extra in runs]
    load_args = args.load_args.split()
    with prepopulated_servers(commands) as servers:
        ratios, p99, user, system = [], ([], []), [], []
        for r in range(rounds):
            order = (0, 1) if r % 2 else (1, 0)
            got = {}
            for i in order:
                got[i] = load(servers[i], seconds, load_args)
            ratios.append(got[1][0] / got[0][0])
            p99[0].append(got[0][1])
            p99[1].append(got[1][1])
            user.append(got[1][2] / got[0][2])
            system.append(got[1][3] / got[0][3])
            print(f'round {r + 1}: A {got[0][0]:.0f} ops/s p99 {got[0][1]:.0f} us user {got[0][2]:.2f} us/req, '
                  f'B {got[1][0]:.0f} ops/s p99 {got[1][1]:.0f} us user {got[1][2]:.2f} us/req, '
                  f'B/A {ratios[-1]:.3f}', flush=True)
        wins = sum(x > 1 for x in ratios)
        print(f'throughput B/A: median {statistics.median(ratios):.4f}, B higher in {wins} of {rounds} '
              f'rounds (one-sided sign test p {sign_test_p(wins, rounds):.3f})')
        # Even rounds run B first. The second server of a round can be favoured (mcbench, session 17:
        # about 4%); the alternation cancels it, and this shows how large it was.
        b_first, a_first = ratios[0::2], ratios[1::2]
        if a_first:
            print(f'throughput B/A by order: B first {statistics.median(b_first):.4f}, A first '
                  f'{statistics.median(a_first):.4f} (medians); geometric mean of all '
                  f'{statistics.geometric_mean(ratios):.4f}')
        print(f'p99 median: A {statistics.median(p99[0]):.0f} us, B {statistics.median(p99[1]):.0f} us')
        lower = sum(x < 1 for x in user)
        print(f'server CPU per request B/A: user median {statistics.median(user):.3f} (B lower in {lower} of '
              f'{rounds} rounds, sign test p {sign_test_p(lower, rounds):.3f}), system median '
              f'{statistics.median(system):.3f}')
        for name, server in zip('AB', servers):
            print(f'{name}: maintainer_wakeups {stat(server.port, "maintainer_wakeups")}, '
                  f'uptime {stat(server.port, "uptime")} s')


if __name__ == '__main__':
    main()
