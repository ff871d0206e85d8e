#!/usr/bin/env python3
"""Large values beside memcached: servers started one after another on free loopback ports with
`-m 256 -t 2` (`-m 64` for `small_kept`), ROUNDS rounds, the order rotating each round; prints the
median of each case per server and each server's ratio to memcached's. One connection, one request
in flight, so a case times the server's handling of one large value (the client's cost included).
The cases session 34's performance audit found cliffs in (cache-node/SERVER.md, "Large values"):

- `sets`: 500 sets of a 1,048,000 B value over 10 keys (sets/s);
- `gets`: 500 gets of such values over 10 keys (gets/s);
- `appends`: 10,000 appends of 100 B to one key, which grows to 1 MB (seconds);
- `small_kept`: 50,000 values of 100 B each read twice, then 200 sets of 400 KB (80 MB into
  64 MiB): how many of the small values still hit.

    python3 cache-node/tools/large_values.py [BIN ...] [--rounds N] [--cases sets,gets,...]

BIN defaults to target/release/cache-node; Debian's /usr/bin/memcached is always run too.
"""
import os
import socket
import statistics
import subprocess
import sys
import time

from loopback import free_port, wait_listening

MEMCACHED = '/usr/bin/memcached'
VALUE = b'x' * 1_048_000


class Conn:
    """One blocking connection with a line reader."""

    def __init__(self, port):
        self.sock = socket.create_connection(('127.0.0.1', port))
        self.file = self.sock.makefile('rb')

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        return self.file.readline()

    def read(self, n):
        return self.file.read(n)


def case_sets(c):
    start = time.perf_counter()
    for i in range(500):
        c.send(b'set k%d 0 0 %d\r\n' % (i % 10, len(VALUE)) + VALUE + b'\r\n')
        assert c.line() == b'STORED\r\n'
    return 500 / (time.perf_counter() - start)


def case_gets(c):
    for i in range(10):
        c.send(b'set g%d 0 0 %d\r\n' % (i, len(VALUE)) + VALUE + b'\r\n')
        assert c.line() == b'STORED\r\n'
    start = time.perf_counter()
    for i in range(500):
        c.send(b'get g%d\r\n' % (i % 10))
        n = int(c.line().split()[3])
        c.read(n + 2)
        assert c.line() == b'END\r\n'
    return 500 / (time.perf_counter() - start)


def case_appends(c):
    c.send(b'set ak 0 0 1\r\na\r\n')
    assert c.line() == b'STORED\r\n'
    start = time.perf_counter()
    for _ in range(10_000):
        c.send(b'append ak 0 0 100\r\n' + b'b' * 100 + b'\r\n')
        assert c.line() == b'STORED\r\n'
    return time.perf_counter() - start


def case_small_kept(c):
    small = 50_000
    c.send(b''.join(b'set s%d 0 0 100 noreply\r\n%s\r\n' % (i, b'v' * 100) for i in range(small)))

    def hits():
        found = 0
        for first in range(0, small, 100):
            c.send(b'get ' + b' '.join(b's%d' % i for i in range(first, first + 100)) + b'\r\n')
            while True:
                line = c.line()
                if line == b'END\r\n':
                    break
                c.read(int(line.split()[3]) + 2)
                found += 1
        return found

    hits()
    hits()
    big = b'x' * 400_000
    for i in range(200):
        c.send(b'set big%d 0 0 %d\r\n' % (i, len(big)) + big + b'\r\n')
        assert c.line() == b'STORED\r\n'
    return hits()


CASES = {'sets': case_sets, 'gets': case_gets, 'appends': case_appends,
         'small_kept': case_small_kept}


def run(binary, case):
    port = free_port()
    memory = '64' if case == 'small_kept' else '256'
    args = [binary, '-p', str(port), '-l', '127.0.0.1', '-m', memory, '-t', '2']
    if binary == MEMCACHED:
        args += ['-U', '0'] + (['-u', 'nobody'] if os.geteuid() == 0 else [])
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, timeout_s=5)
        return CASES[case](Conn(port))
    finally:
        server.kill()
        server.wait()


def main():
    args = sys.argv[1:]
    rounds, cases = 3, list(CASES)
    if '--rounds' in args:
        at = args.index('--rounds')
        rounds = int(args[at + 1])
        del args[at:at + 2]
    if '--cases' in args:
        at = args.index('--cases')
        cases = args[at + 1].split(',')
        del args[at:at + 2]
    default = os.path.join(os.path.dirname(__file__), '..', '..', 'target', 'release', 'cache-node')
    servers = [MEMCACHED] + (args or [default])
    for case in cases:
        results = {s: [] for s in servers}
        for r in range(rounds):
            for s in servers[r % len(servers):] + servers[:r % len(servers)]:
                results[s].append(run(s, case))
        reference = statistics.median(results[MEMCACHED])
        for s in servers:
            median = statistics.median(results[s])
            print('%-10s %-40s median %10.2f  (%s)  /memcached %.3f' % (
                case, s, median, ', '.join('%.2f' % v for v in results[s]), median / reference),
                flush=True)


if __name__ == '__main__':
    main()
