"""The port a worker holds for MLX's ring: MLX's listener binds beside it, nothing else can,
and the worker reports it in Describe. MLX's ring itself listening on reported ports is
proven end to end by test_stop_stuck_job.py (paired agents) and the runtime's mlx tests."""

from __future__ import annotations

import socket

import pytest

from engine.rpc.worker_client import WorkerClient
from engine.worker.ring_port import RingPort


def _mlx_like_listener(port: int) -> socket.socket:
    """What MLX's ring does (mlx/distributed/ring/ring.cpp, accept_connections)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(0)
    return s


def test_mlx_binds_beside_the_held_port_and_nothing_else_takes_it():
    held = RingPort()
    try:
        port = held.port
        assert port > 0 and held.port == port  # picked once, then kept
        for _ in range(2):  # a re-formed group binds the same port again
            listener = _mlx_like_listener(port)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                peer, _ = listener.accept()  # the listener, not the holder, gets it
                c.sendall(b"x")
                assert peer.recv(1) == b"x"
                peer.close()
            listener.close()
        for reuse_addr in (False, True):  # an ordinary server cannot take it meanwhile
            other = socket.socket()
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse_addr))
            with pytest.raises(OSError, match="in use"):
                other.bind(("127.0.0.1", port))
            other.close()
    finally:
        held.close()
    free = socket.socket()  # released on close (SO_REUSEADDR: the test's connections linger)
    free.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    free.bind(("127.0.0.1", port))
    free.close()


def test_describe_reports_the_held_port(local_worker):
    worker, token = local_worker
    with WorkerClient(worker.address, token, timeout_s=30) as c:
        port = c.describe()["ring_port"]
        assert port > 0 and c.describe()["ring_port"] == port
    other = socket.socket()
    with pytest.raises(OSError, match="in use"):
        other.bind(("127.0.0.1", port))
    other.close()
