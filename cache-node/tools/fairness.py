#!/usr/bin/env python3
"""How long one connection waits while others flood the same server with pipelined gets: each flooder
process sends `get small` in blocks of 200 KB without pause (and reads its replies in a thread), and a
probe connection sends one `get small` every 5 ms for 7 s. Prints the probe's median, p99 and worst wait
for each server named, started in turn on a free loopback port with the same `-t` and `-m 64`.
Not part of the tests (the wait is a scheduling property of the machine); SERVER.md, "Limits and bad
input", has the figures. Each run ends by itself after about 12 s per server.

    python3 cache-node/tools/fairness.py [--threads 1] [--flooders 1] [--runs 3] SERVER...

SERVER is a cache-node binary or `memcached` (Debian's, run as nobody).
"""
import argparse
import multiprocessing
import socket
import statistics
import subprocess
import threading
import time

from loopback import free_port, wait_listening

FLOOD_SECONDS = 10
PROBE_SECONDS = 7


def exchange(sock, request, until):
    sock.sendall(request)
    reply = b''
    while not reply.endswith(until):
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise SystemExit('server closed the probe connection')
        reply += chunk
    return reply


def flood(port, seconds):
    sock = socket.create_connection(('127.0.0.1', port))

    def drain():
        try:
            while sock.recv(1 << 20):
                pass
        except OSError:
            pass

    threading.Thread(target=drain, daemon=True).start()
    block = b'get small\r\n' * (200_000 // len(b'get small\r\n'))
    deadline = time.time() + seconds
    try:
        while time.time() < deadline:
            sock.sendall(block)
    except OSError:
        pass


def run_once(server, threads, flooders):
    port = free_port()
    if server == 'memcached':
        cmd = ['/usr/bin/memcached', '-u', 'nobody']
    else:
        cmd = [server]
    cmd += ['-l', '127.0.0.1', '-p', str(port), '-t', str(threads), '-m', '64']
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, 10)
        probe = socket.create_connection(('127.0.0.1', port))
        probe.settimeout(15)
        exchange(probe, b'set small 0 0 10\r\n0123456789\r\n', b'\r\n')
        procs = [multiprocessing.Process(target=flood, args=(port, FLOOD_SECONDS))
                 for _ in range(flooders)]
        for p in procs:
            p.start()
        time.sleep(1)
        waits = []
        start = time.time()
        while time.time() - start < PROBE_SECONDS:
            sent = time.perf_counter()
            exchange(probe, b'get small\r\n', b'END\r\n')
            waits.append(time.perf_counter() - sent)
            time.sleep(0.005)
        for p in procs:
            p.join()
        waits.sort()
        return (statistics.median(waits) * 1e3, waits[int(len(waits) * 0.99)] * 1e3,
                waits[-1] * 1e3, len(waits))
    finally:
        proc.terminate()
        proc.wait(10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--flooders', type=int, default=1)
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('servers', nargs='+')
    args = ap.parse_args()
    for run in range(args.runs):
        for server in args.servers:
            p50, p99, worst, n = run_once(server, args.threads, args.flooders)
            print(f'run {run + 1}: {server} -t {args.threads}, {args.flooders} flooder(s): probe wait '
                  f'p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.2f} ms ({n} probes)', flush=True)


if __name__ == '__main__':
    main()
