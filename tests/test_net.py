"""Ports for the tests' own servers: a port once picked must still be free when the server
binds it, however many connections the tests have opened meanwhile."""

from __future__ import annotations

import socket

from coldtrail.net import ephemeral_ports, free_port, listening_socket


def test_free_port_lies_below_the_range_outgoing_connections_take_ports_from() -> None:
    low, high = ephemeral_ports()
    assert 1024 < low <= high
    with listening_socket() as server:
        # Outgoing connections hold ports of the ephemeral range while free ports are picked.
        clients = [socket.create_connection(server.getsockname()) for _ in range(50)]
        try:
            for _ in range(50):
                port = free_port()
                assert port < low
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))  # still free: the server can bind it
        finally:
            for c in clients:
                c.close()


def test_listening_socket_accepts_before_the_server_runs() -> None:
    with listening_socket() as server:
        host, port = server.getsockname()
        assert host == "127.0.0.1"
        assert port > 0
        with socket.create_connection((host, port), timeout=5) as client:
            accepted, _ = server.accept()
            with accepted:
                client.sendall(b"ping")
                assert accepted.recv(4) == b"ping"
