"""Notice a lost worker fast and stop its peers from waiting for it.

A step goes to every worker at once; we watch the calls rather than wait for all of them:
the first call that fails (or a local worker process that exits) triggers a health probe of
every worker. The ones that do not answer are lost; the survivors get ``Stop``, which fails
their collective mailbox at once, so a peer blocked in a collective returns within
milliseconds instead of waiting out ``dist.step_timeout_s``. While a call runs, every worker
also gets a health check every ``HEARTBEAT_S``: a host whose link went silent (no reset, so
no call fails) is found in seconds, not at the Step deadline, which remains the backstop for
a worker that answers its health check but never finishes its step.

A worker whose job process died (its agent answers, the job is gone) counts as lost too: it
leaves the group like a dead one, and rejoins at a step boundary (engine/runtime/rejoin.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from threading import Event
from typing import TypeVar

from engine.rpc.worker_client import WorkerCallError, WorkerClient
from engine.runtime.cluster import Cluster
from engine.runtime.out_of_memory import check_out_of_memory

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_S = 0.25  # how often a running step checks for exited local worker processes
PROBE_TIMEOUT_S = 2.0  # a health check slower than this counts as a lost worker
HEARTBEAT_S = 2.0  # how often a worker busy in a call gets a health check
HEARTBEAT_TIMEOUT_S = 4.0  # generous: a loaded machine must not look like a cut link
# After Stop, a step still running STOP_GRACE_S (or STOP_GRACE_STEPS times the last step's
# time, if longer) is abandoned: a step that never ends (a machine swapping) must not hold
# Stop forever, and one a little slower than usual should still end in order.
STOP_GRACE_S = 10.0
STOP_GRACE_STEPS = 3.0


class WorkerLost(RuntimeError):
    """Workers that stopped answering during a call; the survivors have been told to stop."""

    def __init__(self, ranks: list[int], addresses: list[str], detected_at: float, cause: str,
                 calls: list[Future] | None = None):  # fmt: skip
        self.ranks, self.addresses, self.detected_at, self.cause = (
            ranks,
            addresses,
            detected_at,
            cause,
        )
        # the interrupted call on every worker (by rank): a survivor's may still end well,
        # e.g. a Step whose lost peer died after its part of the collective went out
        self.calls = calls or []
        super().__init__(f"lost worker {', '.join(addresses)}: {cause}")

    def survivor_results(self, timeout_s: float) -> list | None:
        """The survivors' results of the interrupted call, in rank order, waiting at most
        ``timeout_s`` for each; None where any of them failed or did not end."""
        out = []
        for r, f in enumerate(self.calls):
            if r in self.ranks:
                continue
            try:
                out.append(f.result(timeout=timeout_s))
            except BaseException:  # noqa: BLE001 - failed, cancelled or still running
                return None
        return out


class StepAbandoned(RuntimeError):
    """Stop was asked and the step in flight did not end within its grace: every worker's
    job was ended (local worker processes killed). The run's state is its last snapshot."""


class Watcher:
    """Runs a call on every worker and turns a vanished worker into :class:`WorkerLost`."""

    def __init__(
        self, cluster: Cluster, abort_survivors: bool = True, stop_event: Event | None = None
    ):
        self.cluster = cluster
        self.stop_event = stop_event  # set: a Step past its stop grace is abandoned
        self._last_step_s = 0.0
        self._stop_seen: float | None = None
        # mlx: a Stop cannot interrupt MLX's C++ collective, and the group is not re-formed
        self.abort_survivors = abort_survivors
        self._pool = ThreadPoolExecutor(  # the calls plus the Stop calls that abort them;
            # threads start lazily, so room for a group that grows as workers rejoin costs nothing
            max_workers=2 * max(64, cluster.size),
            thread_name_prefix="orchard-watch",
        )
        self._beats = ThreadPoolExecutor(max_workers=4, thread_name_prefix="orchard-heartbeat")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._beats.shutdown(wait=False, cancel_futures=True)

    def call(self, name: str, fn: Callable[[int, WorkerClient], T]) -> list[T]:
        """``fn(rank, client)`` on every worker; raises WorkerLost, or the first error when
        every worker still answers (a real failure, not a lost worker)."""
        c = self.cluster
        futures = [self._pool.submit(fn, r, cl) for r, cl in enumerate(c.clients)]
        beats: dict[int, Future] = {}
        began = next_beat = time.monotonic()
        next_beat += HEARTBEAT_S
        while True:
            done, pending = wait(futures, timeout=POLL_S, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            exited = [r for r, w in enumerate(c.local) if w.proc.poll() is not None]
            if not pending and not failed:
                if name == "Step":
                    self._last_step_s = time.monotonic() - began
                return [f.result() for f in futures]
            silent = [r for r, b in beats.items() if b.done() and not b.result()]
            if failed or exited or silent:
                break
            if name == "Step" and self._stop_overdue():
                grace = self.stop_grace_s()
                c.abandon(f"Stop: the step did not end within {grace:.0f}s")
                raise StepAbandoned(f"the step in flight did not end within {grace:.0f}s of Stop")
            if time.monotonic() >= next_beat:  # health checks of the workers still busy
                next_beat = time.monotonic() + HEARTBEAT_S
                for r, f in enumerate(futures):
                    if not f.done() and (r not in beats or beats[r].done()):
                        beats[r] = self._beats.submit(c.reachable, r, HEARTBEAT_TIMEOUT_S)
        detected_at = time.time()
        # a step past a worker's memory limit is not a lost worker: every one would hit it
        check_out_of_memory(c, [f.exception() if f.done() else None for f in futures])
        gone = [r for r, f in enumerate(futures) if f.done() and _job_lost(f.exception())]
        lost = [
            r
            for r in range(c.size)
            if r in exited or r in silent or r in gone or not c.reachable(r, PROBE_TIMEOUT_S)
        ]
        if not lost:
            for f in futures:  # every worker answers: the error is real, report it as before
                f.exception()
            errors = [f.exception() for f in futures if f.exception() is not None]
            raise errors[0]
        cause = _first_cause(futures, lost) or "process exited"
        log.info("%s: lost %s (%s)", name, [c.addresses[r] for r in lost], cause)
        if self.abort_survivors:
            self._abort(futures, [r for r in range(c.size) if r not in lost])
        raise WorkerLost(lost, [c.addresses[r] for r in lost], detected_at, cause, futures)

    def stop_grace_s(self) -> float:
        return max(STOP_GRACE_S, STOP_GRACE_STEPS * self._last_step_s)

    def _stop_overdue(self) -> bool:
        """Stop was asked more than the grace ago (counted from when a call first saw it)."""
        if self.stop_event is None or not self.stop_event.is_set():
            return False
        if self._stop_seen is None:
            self._stop_seen = time.monotonic()
        return time.monotonic() - self._stop_seen > self.stop_grace_s()

    def _abort(self, futures: list[Future], survivors: list[int]) -> None:
        """Stop the survivors' job (their collectives fail at once) and wait for their calls."""

        def stop(rank: int) -> None:
            try:
                self.cluster.clients[rank].stop("a peer was lost", timeout_s=30.0)
            except WorkerCallError as e:
                log.warning(
                    "worker %s: stop after a lost peer: %s", self.cluster.addresses[rank], e
                )

        for f in [self._pool.submit(stop, r) for r in survivors]:
            f.result()
        for r in survivors:
            futures[r].exception()  # bounded: their mailboxes failed, Step has a deadline


def _job_lost(error: BaseException | None) -> bool:
    """The worker answered that its job process died (WorkerCallError.job_lost)."""
    return bool(getattr(error, "job_lost", False))


def _first_cause(futures: list[Future], lost: list[int]) -> str:
    for r in lost:
        f = futures[r]
        if f.done() and f.exception() is not None:
            return str(f.exception())
    if any(not futures[r].done() for r in lost):
        return "no answer to its health check while busy in the call (link silent or host frozen)"
    return ""
