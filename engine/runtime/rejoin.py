"""Lost workers come back: found in the background, joined at a step boundary.

A local worker that died is replaced by a fresh process; a remote worker (a Mac that slept,
a link that dropped, a job process that crashed under an agent that still answers) is asked
every ``POLL_S`` until it answers its health check and speaks our protocol. Then, while the
group trains on, it is set up as a group of one (files, model, data: ``prepare``). Nothing
here touches the running group: the coordinator takes what is ready between two steps
(``ready()``), and only then re-forms the group with it (engine/runtime/returning_workers.py).

One thread does all of it and lives until ``close()``: a local worker dies with the
*thread* that started it (Linux's parent-death signal follows the thread), so a replacement
must not be started from a thread that ends before the run does.
"""

from __future__ import annotations

import logging
import threading
import time

from engine.runtime.cluster import Cluster, Departed, Member

log = logging.getLogger(__name__)

POLL_S = 5.0  # how often a departed remote worker is asked whether it is back
CONNECT_TIMEOUT_S = 5.0  # one attempt to reach it
LOCAL_ATTEMPTS = 3  # a local process that failed to start this often will not start later


class Rejoiner:
    def __init__(self, cluster: Cluster, run_id: str = "", prepare: bool = False):
        """``prepare``: set each worker that is back up before handing it over (ship its
        files, SetupJob as a group of one, Cluster.prepare), so the group stops only for
        the state when it joins, not for its model load."""
        self.cluster = cluster
        self.run_id, self.prepare = run_id, prepare
        self._lock = threading.Lock()
        self._ready: list[Member] = []
        self._seeking: list[tuple[Departed, int]] = []  # who, attempts so far
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._main, name="orchard-rejoin", daemon=True)
        self._thread.start()

    def departed(self, gone: list[Departed]) -> None:
        """Start looking for these workers."""
        with self._lock:
            self._seeking += [(g, 0) for g in gone]
            self._wake.notify()

    @property
    def waiting(self) -> int:
        """How many workers are back (and set up ahead) and wait for a step boundary."""
        with self._lock:
            return len(self._ready)

    def ready(self) -> list[Member]:
        """The workers that are back, taken out (non-blocking; call between steps)."""
        with self._lock:
            out, self._ready = self._ready, []
        return out

    def close(self) -> None:
        """Stop looking; close what came back but never joined."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=CONNECT_TIMEOUT_S + 65.0)  # a local start has its own bound
        for m in self.ready():
            self.cluster.discard(m)

    def _main(self) -> None:
        while True:
            with self._lock:
                while not self._seeking and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                seeking, self._seeking = self._seeking, []
            for gone, attempts in seeking:
                self._try(gone, attempts + 1)
            with self._lock:
                if self._seeking and not self._closed:
                    self._wake.wait(POLL_S)

    def _try(self, gone: Departed, attempts: int) -> None:
        try:
            member = self.cluster.reconnect(gone, CONNECT_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - not back yet (or cannot start): try again
            log.info("worker %s is not back yet (attempt %d): %s", gone.address, attempts, e)
            if gone.local and attempts >= LOCAL_ATTEMPTS:
                log.warning("gave up restarting a local worker after %d attempts", attempts)
                return
            with self._lock:
                self._seeking.append((gone, attempts))
            return
        member.ready_at = time.time()  # a rejoin is measured from here (bench/rejoin.py)
        if self.prepare:
            try:
                self.cluster.prepare(member, self.run_id, lambda: self._closed)
            except Exception as e:  # noqa: BLE001 - it joins unprepared (set up at the join)
                log.warning("worker %s is back but could not be set up ahead (%s); it sets "
                            "up when it joins", member.client.address, e)  # fmt: skip
        with self._lock:
            taken = not self._closed
            if taken:
                self._ready.append(member)
        if not taken:
            self.cluster.discard(member)
            return
        ahead = f" (set up ahead in {member.prepared_s:.1f}s)" if member.prepared_s else ""
        log.info("worker %s is back as %s%s; it joins at the next step boundary",
                 gone.address, member.client.address, ahead)  # fmt: skip
