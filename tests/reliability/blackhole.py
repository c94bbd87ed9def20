"""A TCP relay that can go silent: after cut() it swallows every byte both ways and closes
nothing, as a pulled cable or a dead Wi-Fi link does (no RST, no FIN reaches either end)."""

from __future__ import annotations

import selectors
import socket
import threading


class Blackhole:
    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._cut = threading.Event()
        self._done = threading.Event()
        self._socks: list[socket.socket] = []
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.listener, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._loop, name="blackhole", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        self._cut.set()

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)
        for s in [*self._socks, self.listener]:
            s.close()
        self._sel.close()

    def _loop(self) -> None:
        while not self._done.is_set():
            for key, _ in self._sel.select(timeout=0.1):
                if key.data is None:
                    client, _ = self.listener.accept()
                    upstream = socket.create_connection(self.target, timeout=5)
                    self._socks += [client, upstream]
                    self._sel.register(client, selectors.EVENT_READ, upstream)
                    self._sel.register(upstream, selectors.EVENT_READ, client)
                    continue
                try:
                    data = key.fileobj.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    self._sel.unregister(key.fileobj)
                    continue
                if not self._cut.is_set():
                    key.data.sendall(data)
