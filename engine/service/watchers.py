"""The clients watching the engine: one queue each, filled by the run's thread, read in batches.

A client that stops reading (a frozen app) must not grow the engine's memory without end:
past ``MAX_PENDING`` items its queue is closed, and the client's stream ends; attaching again
replays the history, so nothing is lost but the wait.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterable

from engine.events import Event
from engine.service.history import unpack
from engine.service.info import RunMark

log = logging.getLogger(__name__)

MAX_PENDING = 500_000
BATCH = 1000  # items per stream message


class Watcher:
    """One client's queue of events and marks."""

    def __init__(self, client: str):
        self.client = client
        self._items: collections.deque[Event | RunMark | tuple] = collections.deque()
        self._cond = threading.Condition()
        self.closed = False
        self.overflowed = False

    def push(self, item: Event | RunMark) -> None:
        with self._cond:
            if self.closed:
                return
            if len(self._items) >= MAX_PENDING:
                log.warning("client %s is not reading its events; closing its stream", self.client)
                self.overflowed = True
                self.closed = True
            else:
                self._items.append(item)
            self._cond.notify()

    def extend(self, items: Iterable[Event | RunMark | tuple]) -> None:
        """Queue a replay; packed metrics (tuples) are unpacked as they are read."""
        with self._cond:
            self._items.extend(items)
            self._cond.notify()

    def get(self, timeout: float) -> list[Event | RunMark]:
        """Up to ``BATCH`` items, waiting up to ``timeout`` for the first; [] when none came."""
        with self._cond:
            if not self._items and not self.closed:
                self._cond.wait(timeout)
            n = min(len(self._items), BATCH)
            items = [self._items.popleft() for _ in range(n)]
        return [unpack(i) if type(i) is tuple else i for i in items]  # type: ignore[misc]

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify()
