"""A communication lane: one thread that runs a step's collectives in order, while the
main thread goes on computing the next gradient bucket.

Every rank submits the same collectives in the same order, and one thread runs them first
in, first out, so the op ids pair up across ranks as they would on one thread. The lane
only reads buffers that are already evaluated (mx arrays viewed in place) and returns
numpy; it never builds MLX graphs, so MLX stays on the main thread. It times each call:
the step reports how much of that time the main thread never waited for (hidden).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class CommLane:
    def __init__(self, name: str = "orchard-comm"):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.busy_s = 0.0  # time spent in collectives since the last reset()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` after everything submitted before it; the future's result is
        ``fn``'s (its exception, if it raised)."""
        return self._pool.submit(self._timed, fn, args)

    def _timed(self, fn: Callable[..., Any], args: tuple) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.busy_s += time.perf_counter() - t

    def drain(self) -> None:
        """Wait until everything submitted so far has run (results and errors dropped)."""
        self._pool.submit(lambda: None).result()

    def reset(self) -> float:
        """The busy time so far (all submitted work must be done), then zero."""
        busy, self.busy_s = self.busy_s, 0.0
        return busy

    def close(self) -> None:
        """Stop taking work; a collective still blocked ends at its own timeout."""
        self._pool.shutdown(wait=False, cancel_futures=True)
