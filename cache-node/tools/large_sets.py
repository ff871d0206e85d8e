#!/usr/bin/env python3
"""Large-value `set` rate of two cache-node builds, side by side: for each value size, ROUNDS rounds
alternating which build goes first; each run starts the build on a free loopback port with `-m 256`
and has 4 connections store values of that size one after another (each waits for STORED). Prints
the median sets per second of each build and their ratio. For changes to how a large value is read
(cache-node/SERVER.md, "a value over 16 KiB still arriving").

    python3 cache-node/tools/large_sets.py OLD NEW [SIZE:COUNT ...] [--rounds N]

SIZE:COUNT defaults to 1000000:300 100000:2000 20000:5000 (COUNT sets per connection).
"""
import socket
import statistics
import subprocess
import sys
import threading
import time

from loopback import free_port, wait_listening

CONNECTIONS = 4


def sets_per_second(binary, size, count):
    port = free_port()
    server = subprocess.Popen([binary, '-p', str(port), '-m', '256'], stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, timeout_s=5)
        payload = b'x' * size

        def client(c):
            with socket.create_connection(('127.0.0.1', port)) as s:
                for i in range(count):
                    s.sendall(b'set k%d_%d 0 0 %d\r\n' % (c, i % 50, size) + payload + b'\r\n')
                    got = b''
                    while not got.endswith(b'\r\n'):
                        got += s.recv(64)
                    assert got == b'STORED\r\n', got

        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(CONNECTIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return count * CONNECTIONS / (time.perf_counter() - start)
    finally:
        server.kill()
        server.wait()


def main():
    args = sys.argv[1:]
    rounds = 5
    if '--rounds' in args:
        at = args.index('--rounds')
        rounds = int(args[at + 1])
        del args[at:at + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    builds = {'old': args[0], 'new': args[1]}
    sizes = [tuple(map(int, a.split(':'))) for a in args[2:]] or [
        (1_000_000, 300), (100_000, 2000), (20_000, 5000)]
    for size, count in sizes:
        rates = {'old': [], 'new': []}
        for r in range(rounds):
            for name in ('old', 'new') if r % 2 == 0 else ('new', 'old'):
                rates[name].append(sets_per_second(builds[name], size, count))
        old, new = statistics.median(rates['old']), statistics.median(rates['new'])
        print('value %8d B, %d connections: old %6.0f sets/s  new %6.0f sets/s  new/old %.3f'
              % (size, CONNECTIONS, old, new, new / old), flush=True)


if __name__ == '__main__':
    main()
