"""End a network worker's job once its coordinator is gone, so the worker turns idle again.

A local worker dies with its engine (lifeline.py); a network agent cannot, so without this it
would hold its job (and the model's memory) forever after its coordinator's kill -9, crash or
lost link. Two signals end the job:

- a coordinator call that the worker was still serving is cancelled: gRPC cancels it at once
  when the coordinator's TCP connection resets (its process died), and within ~15 s when the
  server's keepalive ping goes unanswered (a silent link; engine/rpc/channel.py);
- the lease: no call of the job's coordinator in flight for ``lease_s`` seconds. Between calls
  (checkpoint writes, a slow peer's SetupJob) the coordinator renews it with any call carrying
  the job's id, the cheapest being WorkerClient.keep_alive (a Describe).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class CallTicket:
    """One coordinator call in flight; ``job_id`` is the job it serves ("" before SetupJob)."""

    call: str
    job_id: str
    done: bool = False
    reported: bool = False  # its cancellation was handed on (once per call)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


# end_job(job_id, reason, kill): kill=True when a call may still be waiting on the job.
EndJob = Callable[[str, str, bool], None]


class OrphanGuard:
    """Counts the coordinator's calls in flight and ends an orphaned job on its own thread
    (gRPC's done-callbacks run on the server's poll thread and must not block)."""

    def __init__(self, lease_s: float, end_job: EndJob):
        if not lease_s > 0:
            raise ValueError(f"job lease: expected seconds > 0, got {lease_s}")
        self.lease_s = float(lease_s)
        self._end_job = end_job
        self._lock = threading.Lock()
        self._job_id = ""
        self._in_flight = 0
        self._last = time.monotonic()
        self._requests: queue.Queue[tuple[str, str, bool] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="orphan-guard", daemon=True)
        self._thread.start()

    # ---- the runner tells it about jobs --------------------------------------------------
    def job_started(self, job_id: str) -> None:
        with self._lock:
            self._job_id, self._last = job_id, time.monotonic()

    def job_ended(self, job_id: str) -> None:
        with self._lock:
            if self._job_id == job_id:
                self._job_id = ""

    def renew(self, job_id: str) -> None:
        """A keep-alive from the job's coordinator."""
        with self._lock:
            if job_id and job_id == self._job_id:
                self._last = time.monotonic()

    # ---- calls ---------------------------------------------------------------------------
    def begin(self, call: str, job_id: str) -> CallTicket:
        with self._lock:
            self._in_flight += 1
            self._last = time.monotonic()
        return CallTicket(call, job_id)

    def end(self, ticket: CallTicket, client_gone: bool) -> None:
        """The handler returned; ``client_gone``: its call was cancelled meanwhile."""
        with ticket.lock:
            if ticket.done:
                return
            ticket.done = True
        with self._lock:
            self._in_flight -= 1
            self._last = time.monotonic()
        if client_gone:
            self._cancelled(ticket)

    def call_closed(self, ticket: CallTicket) -> None:
        """gRPC's done-callback: it fires while the handler still runs only when the call was
        cancelled (its client vanished or gave up at its deadline)."""
        with ticket.lock:
            running = not ticket.done
        if running:
            self._cancelled(ticket)

    def _cancelled(self, ticket: CallTicket) -> None:
        with ticket.lock:  # SetupJob's ticket gets its job id only once the job is made
            if not ticket.job_id or ticket.reported:
                return
            ticket.reported = True
        reason = (
            f"its coordinator's {ticket.call} call was cancelled before it finished "
            "(the coordinator's process or connection is gone)"
        )
        self._requests.put((ticket.job_id, reason, True))

    # ---- the guard's thread --------------------------------------------------------------
    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(timeout=5)

    def _expired(self) -> str:
        with self._lock:
            idle = time.monotonic() - self._last
            if self._job_id and self._in_flight == 0 and idle > self.lease_s:
                return self._job_id
        return ""

    def _run(self) -> None:
        tick = min(1.0, self.lease_s / 4)
        while True:
            try:
                item = self._requests.get(timeout=tick)
            except queue.Empty:
                job_id = self._expired()
                if not job_id:
                    continue
                item = (job_id, f"no call from its coordinator for {self.lease_s:g} s (job lease)",
                        False)  # fmt: skip
            if item is None:
                return
            with self._lock:
                if item[0] != self._job_id:  # ended meanwhile, or another job runs now
                    continue
            try:
                self._end_job(*item)
            except Exception:  # noqa: BLE001 - the guard must outlive one failed end
                log.exception("could not end orphaned job %s", item[0])
            if not item[2]:
                with self._lock:  # an end that did not happen must not fire every tick
                    self._last = time.monotonic()
