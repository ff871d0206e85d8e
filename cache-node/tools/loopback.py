"""Helpers the cache-node tools share for servers they start on loopback: a free port, waiting until
something listens on it, and a set of prepopulated servers for `mcload` runs. No server logic; imported
by the other tools (run from any directory: Python puts the script's own folder on its path)."""
import collections
import contextlib
import os
import socket
import subprocess
import time

MCLOAD = os.path.join(os.path.dirname(__file__), '..', '..', 'target', 'release', 'mcload')


def free_port():
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_listening(port, timeout_s):
    """Returns once a connection to 127.0.0.1:port succeeds; exits the tool after timeout_s."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f'nothing listens on port {port} after {timeout_s} s')


Server = collections.namedtuple('Server', 'port pid')


def cpu_ticks(pid):
    """(user, system) CPU time of a process so far, in clock ticks (`os.sysconf('SC_CLK_TCK')` a second)."""
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return int(fields[11]), int(fields[12])


@contextlib.contextmanager
def prepopulated_servers(commands):
    """Starts each command (an argv list, `{port}` standing for a free port) at once, waits until each
    listens, stores `mcload`'s key space in each, and yields a `Server` (port, pid) for each, in order;
    stops them all at the end."""
    ports = [free_port() for _ in commands]
    servers = [subprocess.Popen([arg.replace('{port}', str(p)) for arg in argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for argv, p in zip(commands, ports)]
    try:
        for p in ports:
            wait_listening(p, timeout_s=10)
            subprocess.run([MCLOAD, '--addr', f'127.0.0.1:{p}', '--prepopulate',
                            '--duration-secs', '1', '--warmup-secs', '0'],
                           capture_output=True, check=True)
        yield [Server(p, s.pid) for p, s in zip(ports, servers)]
    finally:
        for s in servers:
            s.terminate()
            s.wait()
