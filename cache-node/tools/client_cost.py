#!/usr/bin/env python3
"""What the load generator pays per request against cache-node and against memcached: `mcload`'s
`epoll_wait` calls, context switches and CPU per request, counted with `perf stat` around each
closed-loop run (cache-node/SERVER.md, "Where the remaining gap is"). Both servers run at once with
the benchmark's flags (`-t 2 -m 256 -c 4096`) on free loopback ports; each round runs `mcload`
against one and then the other. Prints the medians per server. Needs `perf` (linux-perf).
Not part of the tests; `mcbench` is the benchmark.

    cargo build --release -p cache-node
    python3 cache-node/tools/client_cost.py [ROUNDS=6] [SECONDS=4]
"""
import argparse
import os
import re
import statistics
import subprocess

from loopback import MCLOAD, prepopulated_servers

RELEASE = os.path.join(os.path.dirname(__file__), '..', '..', 'target', 'release')
SERVER_FLAGS = ['-t', '2', '-m', '256', '-c', '4096']
WARMUP_S = 0.3
EVENTS = 'syscalls:sys_enter_epoll_wait,context-switches'


def measured_run(port, seconds):
    """One closed-loop run under `perf stat`: (ops/s, epoll_wait per op, switches per op, client CPU us
    per op, p50 us). perf counts the warm-up too, so its counts are scaled by the measured share."""
    out = subprocess.run(['perf', 'stat', '-x', ',', '-e', EVENTS, '--', MCLOAD,
                          '--addr', f'127.0.0.1:{port}', '--duration-secs', str(seconds),
                          '--warmup-secs', str(WARMUP_S)],
                         capture_output=True, text=True, check=True)
    fields = dict(re.findall(r'(\w+)=([\d.]+)', out.stdout))
    counts = {}
    for line in out.stderr.splitlines():
        parts = line.split(',')
        if len(parts) > 2 and parts[0].isdigit():
            counts[parts[2]] = int(parts[0])
    ops = float(fields['ops']) * (seconds + WARMUP_S) / seconds
    return (float(fields['ops_per_sec']), counts['syscalls:sys_enter_epoll_wait'] / ops,
            counts['context-switches'] / ops, float(fields['client_cpu_us_per_op']),
            float(fields['p50_us']))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('rounds', nargs='?', type=int, default=6)
    parser.add_argument('seconds', nargs='?', type=float, default=4)
    parser.add_argument('--cache-node', default=os.path.join(RELEASE, 'cache-node'),
                        help='the cache-node binary (default: the release build)')
    parser.add_argument('--memcached', default='/usr/bin/memcached')
    args = parser.parse_args()
    # memcached refuses to run as root without -u.
    user = ['-u', 'root'] if os.geteuid() == 0 else []
    commands = [[args.cache_node, '-p', '{port}', '-l', '127.0.0.1', *SERVER_FLAGS],
                [args.memcached, '-p', '{port}', '-l', '127.0.0.1', '-U', '0', *user, *SERVER_FLAGS]]
    names = ['cache-node', 'memcached']
    with prepopulated_servers(commands) as servers:
        runs = {name: [] for name in names}
        for r in range(args.rounds):
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                runs[names[i]].append(measured_run(servers[i].port, args.seconds))
    for name, rs in runs.items():
        med = [statistics.median(x[i] for x in rs) for i in range(5)]
        print(f'{name:10} rounds {len(rs)}: {med[0]:.0f} ops/s, per request {med[1]:.3f} epoll_wait, '
              f'{med[2]:.3f} context switches, {med[3]:.2f} us client CPU; p50 {med[4]:.0f} us')


if __name__ == '__main__':
    main()
