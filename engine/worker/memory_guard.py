"""The second guard: a worker process never takes more than its share of the machine.

The preflight refuses a run whose estimate won't fit; this catches what an estimate misses.
MLX 0.32's ``mx.set_memory_limit`` is a guideline, not a cap: on the CPU backend it makes the
evaluator wait for running tasks while over it, on Metal it sets when cached buffers are
given back, and neither refuses an allocation (and a malloc that fails on the CPU backend
crashes the process). So the guard sets that limit, and a thread also watches MLX's active
memory; past the limit it logs one line naming memory and ends the process with
MEMORY_EXIT_CODE before the step can push the machine into swap. The parent (the engine for
a local worker, the agent for a network worker's job process) turns that exit code into a
message naming memory, and the run ends failed instead of redoing a step that cannot fit.

The limit is REFUSE_SHARE of the machine's memory divided among the workers on it
(ORCHARD_WORKERS_ON_HOST, set by the engine for its local workers), or less with
ORCHARD_MEMORY_LIMIT_MB (a cap per worker process, for a user who wants to keep room).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from engine.machine import REFUSE_SHARE, memory_bytes

log = logging.getLogger(__name__)

LIMIT_ENV = "ORCHARD_MEMORY_LIMIT_MB"
WORKERS_ENV = "ORCHARD_WORKERS_ON_HOST"
MEMORY_EXIT_CODE = 86  # "stopped at its memory limit"; no other Orchard exit uses it
TAG = "memory limit:"  # starts the guard's log line and every message made from it
POLL_S = 0.02  # a step's buffers are counted when allocated, before their pages are touched


def memory_limit(env: Mapping[str, str] = os.environ, total: int | None = None) -> int:
    """Bytes this worker process may hold: its share of the machine, or the env cap."""
    total = memory_bytes() if total is None else total
    try:
        workers = max(1, int(env.get(WORKERS_ENV, "1")))
    except ValueError:
        workers = 1
    limit = int(REFUSE_SHARE * total / workers) if total else 0
    cap = env.get(LIMIT_ENV, "")
    if cap:
        try:
            mb = float(cap)
        except ValueError:
            mb = 0.0
        if mb > 0:
            limit = min(limit, int(mb * 2**20)) if limit else int(mb * 2**20)
        else:
            log.warning("%s=%r: expected a positive number of MiB; ignored", LIMIT_ENV, cap)
    return limit


def exit_message(limit: int | None = None) -> str:
    """What a parent says of a child that ended with MEMORY_EXIT_CODE (same env, same limit)."""
    limit = memory_limit() if limit is None else limit
    return (f"{TAG} the worker's step needed more than its limit of {limit / 2**30:.2f} GiB "
            "and was stopped before it could push the machine into swap")  # fmt: skip


class MemoryGuard:
    """Sets MLX's memory limit and ends the process past it (see the module docstring)."""

    def __init__(self, limit: int, poll_s: float = POLL_S):
        self.limit = limit
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="memory-guard", daemon=True)

    def start(self) -> MemoryGuard:
        import mlx.core as mx

        mx.set_memory_limit(self.limit)
        self._thread.start()
        log.info("memory guard: %.2f GiB for this process", self.limit / 2**30)
        return self

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        import mlx.core as mx

        while not self._stop.wait(self.poll_s):
            used = mx.get_active_memory()
            if used > self.limit:
                self._trip(used)

    def _trip(self, used: int) -> None:
        line = (f"{TAG} this worker's step holds {used / 2**30:.2f} GiB of MLX memory, over its "
                f"limit of {self.limit / 2**30:.2f} GiB; stopping it before the machine swaps")  # fmt: skip
        try:
            log.error("%s", line)
            logging.shutdown()  # flush the line to the worker's log before the hard exit
        finally:
            os._exit(MEMORY_EXIT_CODE)  # MLX cannot be interrupted mid-step; the parent reports


def install_memory_guard() -> MemoryGuard | None:
    """Start the guard for this process (None when the machine's memory is unknown)."""
    limit = memory_limit()
    if not limit:
        log.warning("memory guard off: this machine's memory is unknown")
        return None
    return MemoryGuard(limit).start()
