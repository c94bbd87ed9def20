"""The TCP port a worker holds on its own host for MLX's ring backend (dist.mode "mlx").

MLX's ring reads every rank's "ip:port" from one hostfile, so the coordinator must know each
worker's port before SetupJob; a port only the worker can vouch for is one free on the
worker's host, and a port merely found free can be taken before MLX binds it. So the worker
picks the port and keeps it: a socket bound to it with SO_REUSEPORT and never listening.
MLX binds its listener with SO_REUSEADDR and SO_REUSEPORT (mlx/distributed/ring/ring.cpp,
accept_connections), which the kernel allows beside it for the same user, and only the
listening socket gets connections; programs without SO_REUSEPORT, and the kernel's own
choice of port for bind(0) or an outgoing connection, cannot take it meanwhile. The worker
reports it in Describe (WorkerInfo.ring_port) and the coordinator builds the hostfile from
the reports.
"""

from __future__ import annotations

import logging
import socket
import threading

log = logging.getLogger(__name__)


class RingPort:
    """One port held for MLX's ring, picked on first use and kept until close()."""

    def __init__(self, host: str = "0.0.0.0"):
        self.host = host  # every address: the coordinator names the worker by any of them
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int:
        """The held port; 0 when none could be held (the coordinator then says so)."""
        with self._lock:
            if self._sock is None:
                self._sock = self._hold()
            return self._sock.getsockname()[1] if self._sock is not None else 0

    def _hold(self) -> socket.socket | None:
        if not hasattr(socket, "SO_REUSEPORT"):
            log.warning("no SO_REUSEPORT here: no port is held for MLX's ring")
            return None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.host, 0))
        except OSError as e:
            sock.close()
            log.warning("could not hold a port for MLX's ring: %s", e)
            return None
        log.info("holding port %d for MLX's ring", sock.getsockname()[1])
        return sock

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
            self._sock = None
