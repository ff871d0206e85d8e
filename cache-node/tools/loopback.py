"""Helpers the cache-node tools share for servers they start on loopback: a free port, and waiting
until something listens on it. No server logic; imported by ab_servers.py and conn_memory.py (run
from any directory: Python puts the script's own folder on its path)."""
import socket
import time


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
