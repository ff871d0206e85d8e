#!/usr/bin/env python3
"""Resident memory per client connection, cache-node beside memcached, for cache-node/SERVER.md
("thousands of mostly idle connections"). Each server is started on a free loopback port, N
connections are opened (idle), then each sends one set and one get and waits for the replies;
the server's VmRSS growth over its start is divided by N. Median of ROUNDS runs per server,
servers alternating. Not part of the tests (`tests/cli.rs` asserts the bound for cache-node).

    cargo build --release -p cache-node
    python3 cache-node/tools/conn_memory.py [N=3000] [ROUNDS=3]

Needs `memcached` (scripts/setup installs it) and an open-files limit above N.
"""
import resource
import socket
import statistics
import subprocess
import sys
import time

from loopback import free_port, wait_listening

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
OURS = 'target/release/cache-node'


def rss_kb(pid):
    with open('/proc/%d/status' % pid) as f:
        return next(int(l.split()[1]) for l in f if l.startswith('VmRSS'))


def measure(name):
    port = free_port()
    cmd = {
        'cache-node': [OURS, '-p', str(port), '-c', str(N + 100)],
        'memcached': ['memcached', '-p', str(port), '-l', '127.0.0.1', '-U', '0', '-u', 'root',
                      '-c', str(N + 100)],
    }[name]
    server = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, timeout_s=5)
        time.sleep(0.2)
        base = rss_kb(server.pid)
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


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = {'cache-node': [], 'memcached': []}
    for _ in range(ROUNDS):
        for name in results:
            results[name].append(measure(name))
    print('%d connections, RSS growth per connection (median of %d runs):' % (N, ROUNDS))
    for name, runs in results.items():
        idle = statistics.median(r[0] for r in runs)
        used = statistics.median(r[1] for r in runs)
        print('  %-10s idle %6.0f B   after a set and a get each %6.0f B' % (name, idle, used))


if __name__ == '__main__':
    main()
