"""Small network helpers."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000  # clear of the well-known and most registered services' ports


def ephemeral_ports() -> tuple[int, int]:
    """The range the OS takes outgoing connections' local ports (and ``bind(0)``'s) from."""
    try:
        low, high = _EPHEMERAL.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing is bound to right now, for a server that binds it itself later
    (another process: Mosquitto, PostgreSQL, a ``coldtrail`` command).

    Chosen below the ephemeral range. A port from ``bind(0)`` comes out of the range that
    outgoing connections take their local ports from, and between our closing it and the
    server binding it, one of them can take it: CI saw uvicorn's bind fail with "address
    already in use" after a test had opened hundreds of connections. A server in this process
    needs no free port: it takes a :func:`listening_socket`.
    """
    low, _ = ephemeral_ports()
    if low - _LOWEST < 1_000:  # an unusual range leaves no room below it: let the OS pick
        return _bind_zero(host)
    for _ in range(100):
        port = _LOWEST + secrets.randbelow(low - _LOWEST)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:  # taken, or lingering from an earlier test: try another
                continue
            return port
    return _bind_zero(host)


def _bind_zero(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def listening_socket(host: str = "127.0.0.1", backlog: int = 128) -> socket.socket:
    """A socket listening on a port the OS picked, to hand to a server in this process: the
    port is ours from the moment it is picked, so nothing can take it before the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
