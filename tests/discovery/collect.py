"""Collect a Browser's callbacks and wait on them with deadlines (for in-process tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from engine.discovery import PeerRecord


class Collector:
    def __init__(self) -> None:
        self.events: list[tuple[str, PeerRecord]] = []
        self._cond = threading.Condition()

    def __call__(self, change: str, record: PeerRecord) -> None:
        with self._cond:
            self.events.append((change, record))
            self._cond.notify_all()

    def wait_until(
        self, predicate: Callable[[list[tuple[str, PeerRecord]]], bool], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.events):
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = [(c, r.key, r.state, r.problem) for c, r in self.events[-6:]]
                    raise AssertionError(
                        f"condition not met within {timeout} s; last events: {tail}"
                    )
                self._cond.wait(left)

    def keys(self, change: str) -> set[str]:
        with self._cond:
            return {r.key for c, r in self.events if c == change}
