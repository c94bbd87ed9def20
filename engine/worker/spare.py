"""One warm spare job process for a network agent, so SetupJob skips importing MLX.

Importing MLX and mlx-lm costs ~3 s of CPU (8-14 s of wall time on a loaded machine), and a
re-formed group sets every job up again. The pool keeps one child spawned ahead with the
training stack imported (engine/worker/job_process.py), idle until a SetupJob takes it; a new
spare then starts in the background. An idle spare holds no job: ending it loses nothing.
"""

from __future__ import annotations

import logging
import threading
import time

from engine.worker.job_process import Spawned

log = logging.getLogger(__name__)


class SparePool:
    """Hands out job processes: the warm spare when there is one, else a fresh child."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: Spawned | None = None
        self._closed = False
        self._refill()

    def _refill(self) -> None:
        threading.Thread(target=self._spawn, name="job-spare", daemon=True).start()

    def _spawn(self) -> None:
        try:
            spawned = Spawned()
        except Exception:  # noqa: BLE001 - without a spare, SetupJob spawns its own child
            log.warning("could not start a spare job process", exc_info=True)
            return
        with self._lock:
            keep = not self._closed and self._spare is None
            if keep:
                self._spare = spawned
        if not keep:
            spawned.discard()
        else:
            log.debug("spare job process %d started", spawned.proc.pid)

    def take(self) -> Spawned:
        """The warm spare (or a fresh child if it is not there or died); starts the next."""
        with self._lock:
            spawned, self._spare = self._spare, None
            closed = self._closed
        if spawned is not None and not spawned.proc.is_alive():
            log.warning("the spare job process died idle (exit code %s); starting a fresh one",
                        spawned.proc.exitcode)  # fmt: skip
            spawned.discard()
            spawned = None
        if spawned is None:
            spawned = Spawned()
        if not closed:
            self._refill()
        return spawned

    def wait_ready(self, timeout_s: float) -> bool:
        """True once a spare exists and has imported the training stack (tests, benches)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                spare = self._spare
                if spare is not None and spare.wait_ready(0.05):
                    return True
            time.sleep(0.05)
        return False

    def spare_pid(self) -> int | None:
        with self._lock:
            return self._spare.proc.pid if self._spare is not None else None

    def close(self) -> None:
        with self._lock:
            spawned, self._spare, self._closed = self._spare, None, True
        if spawned is not None:
            spawned.discard()
