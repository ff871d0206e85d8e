#!/usr/bin/env python3
"""Resident memory per client connection, cache-node beside memcached, for cache-node/SERVER.md
("thousands of mostly idle connections"). Each server is started on a free loopback port, N
connections are opened (idle), then each sends one set and one get and waits for the replies;
the server's VmRSS growth over its start is divided by N. Median of ROUNDS runs per server,
servers alternating. Not part of the tests (`tests/cli.rs` asserts the bound for cache-node).

With `--stalled VALUE_BYTES GETS`, the N connections are clients that stop reading instead (SERVER.md,
"Replies held for clients that do not read"): one value of VALUE_BYTES is stored, then each connection
sends GETS `get`s of it and never reads; the growth is measured after the servers had time to fill the
sockets, with `-m 64`.

    cargo build --release -p cache-node
    python3 cache-node/tools/conn_memory.py [N=3000] [ROUNDS=3] [--stalled VALUE_BYTES GETS]

Needs `memcached` (scripts/setup installs it) and an open-files limit above N.
"""
import resource
import socket
import statistics
import subprocess
import sys
import time

from loopback import free_port, wait_listening

ARGS = [a for a in sys.argv[1:] if not a.startswith('--')]
STALLED = None
if '--stalled' in sys.argv:
    at = sys.argv.index('--stalled')
    STALLED = (int(sys.argv[at + 1]), int(sys.argv[at + 2]))
    ARGS = [a for a in sys.argv[1:at] + sys.argv[at + 3:] if not a.startswith('--')]
N = int(ARGS[0]) if len(ARGS) > 0 else 3000
ROUNDS = int(ARGS[1]) if len(ARGS) > 1 else 3
OURS = 'target/release/cache-node'


def rss_kb(pid):
    with open('/proc/%d/status' % pid) as f:
        return next(int(l.split()[1]) for l in f if l.startswith('VmRSS'))


def measure(name):
    port = free_port()
    cmd = {
        'cache-node': [OURS, '-p', str(port), '-c', str(N + 100), '-m', '64'],
        'memcached': ['memcached', '-p', str(port), '-l', '127.0.0.1', '-U', '0', '-u', 'root',
                      '-c', str(N + 100), '-m', '64'],
    }[name]
    server = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, timeout_s=5)
        time.sleep(0.2)
        base = rss_kb(server.pid)
        if STALLED:
            return measure_stalled(server.pid, port, base)
        conns = [socket.create_connection(('127.0.0.1', port)) for _ in range(N)]
        time.sleep(0.5)
        idle = rss_kb(server.pid)
        for i, s in enumerate(conns):
            s.sendall(b'set k%d 0 0 5\r\nhello\r\nget k%d\r\n' % (i, i))
        for s in conns:
            got = b''
            while not got.endswith(b'END\r\n'):
                got += s.recv(256)
        time.sleep(0.5)
        used = rss_kb(server.pid)
        for s in conns:
            s.close()
        return (idle - base) * 1024 / N, (used - base) * 1024 / N
    finally:
        server.kill()
        server.wait()


def measure_stalled(pid, port, base):
    """N clients that each send GETS gets of one VALUE_BYTES value and never read: RSS growth per
    connection, after one second and after three."""
    value_bytes, gets = STALLED
    with socket.create_connection(('127.0.0.1', port)) as s:
        s.sendall(b'set k 0 0 %d\r\n' % value_bytes + b'x' * value_bytes + b'\r\n')
        got = b''
        while not got.endswith(b'\r\n'):
            got += s.recv(64)
        assert got == b'STORED\r\n', got
    time.sleep(0.2)
    base = rss_kb(pid)
    conns = [socket.create_connection(('127.0.0.1', port)) for _ in range(N)]
    for s in conns:
        s.sendall(b'get k\r\n' * gets)
    time.sleep(1)
    first = rss_kb(pid)
    time.sleep(2)
    later = rss_kb(pid)
    for s in conns:
        s.close()
    return (first - base) * 1024 / N, (later - base) * 1024 / N


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = {'cache-node': [], 'memcached': []}
    for _ in range(ROUNDS):
        for name in results:
            results[name].append(measure(name))
    if STALLED:
        print('%d connections that send %d gets of a %d-byte value and do not read, RSS growth per '
              'connection (median of %d runs):' % (N, STALLED[1], STALLED[0], ROUNDS))
    else:
        print('%d connections, RSS growth per connection (median of %d runs):' % (N, ROUNDS))
    for name, runs in results.items():
        first = statistics.median(r[0] for r in runs)
        later = statistics.median(r[1] for r in runs)
        if STALLED:
            print('  %-10s after 1 s %9.0f B   after 3 s %9.0f B' % (name, first, later))
        else:
            print('  %-10s idle %6.0f B   after a set and a get each %6.0f B' % (name, first, later))


if __name__ == '__main__':
    main()
