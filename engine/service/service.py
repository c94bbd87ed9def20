"""The engine process's logic: one run at a time, its history, and the clients watching it.

Qt-free and grpc-free: ``engine/rpc/engine_servicer.py`` translates the wire into these
calls. The run itself is ``engine.runtime.start_run`` on a thread of this process; its events
go to the run's history and to every attached client. The run does not depend on any
client: it goes on with none attached, and the process exits by itself once it has been
idle (no run going, no client attached) for ``idle_exit_s``.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import ConfigError, JobSpec
from engine.events import Event, EventSink, LogEvent, StateEvent
from engine.service.history import RunHistory
from engine.service.info import ENGINE_PROTOCOL_VERSION, EngineStatus, RunInfo, RunMark
from engine.service.notify import notify
from engine.service.power import AwakeAssertion
from engine.service.watchers import Watcher
from engine.train.run_dir import JOB_FILE

log = logging.getLogger(__name__)

IDLE_EXIT_S = 60.0  # how long an engine with no run and no client waits before it exits
Launch = Callable[[JobSpec, EventSink, threading.Event, "str | None"], Any]


def runtime_launch(job: JobSpec, sink: EventSink, stop: threading.Event, resume_from: str | None):
    """The real run: the multi-worker coordinator (imports MLX, so only when a run starts)."""
    from engine.runtime import start_run

    return start_run(job, sink, stop, resume_from=resume_from)


class EngineBusy(RuntimeError):
    """A run is going; the engine runs one at a time."""


class BadRequest(ValueError):
    """The job or run folder sent cannot start a run; the message names the problem."""


class EngineClosing(RuntimeError):
    """The engine decided to exit (idle); a client starts a fresh one."""


@dataclass
class _Run:
    run_id: str
    job: JobSpec
    job_toml: str
    resume_from: str
    client: str
    stop: threading.Event = field(default_factory=threading.Event)
    history: RunHistory = field(default_factory=RunHistory)
    active: bool = True
    status: str = ""

    def info(self) -> RunInfo:
        h = self.history
        return RunInfo(
            self.run_id, h.run_dir or self.resume_from, h.state or "starting", self.active,
            self.job_toml, h.step, h.total_steps, h.message, self.resume_from, self.client,
        )  # fmt: skip


class EngineService:
    def __init__(
        self,
        launch: Launch = runtime_launch,
        idle_exit_s: float = IDLE_EXIT_S,
        clock: Callable[[], float] = time.monotonic,
        keep_awake: Callable[[], Any] = AwakeAssertion,
        announce: Callable[[str, str], Any] = notify,
    ):
        self._launch = launch
        self.idle_exit_s = idle_exit_s
        self._clock = clock
        self._keep_awake = keep_awake
        self._announce = announce
        self._lock = threading.RLock()
        self._run: _Run | None = None
        self._thread: threading.Thread | None = None
        self._watchers: list[Watcher] = []
        self._ids = itertools.count(1)
        self._idle_since: float | None = clock()
        self._exit_now = False
        self._closed = False
        self.started_at = time.time()

    # the API (every method may be called from any thread) -----------------------------------
    def status(self) -> EngineStatus:
        with self._lock:
            run = self._run.info() if self._run is not None else None
            return EngineStatus(
                ENGINE_PROTOCOL_VERSION, os.getpid(), len(self._watchers), run, self.started_at
            )

    def start(self, job_toml: str, resume_from: str = "", client: str = "") -> RunInfo:
        """Start a run (or continue ``resume_from`` from its last checkpoint); returns at once.
        Raises EngineBusy while a run is going, BadRequest for a job or folder that cannot run."""
        try:
            job = JobSpec.from_toml(job_toml, source="the job sent to the engine")
        except ConfigError as e:
            raise BadRequest(str(e)) from e
        if resume_from and not (Path(resume_from) / JOB_FILE).is_file():
            raise BadRequest(f"{resume_from}: not a run folder (it has no {JOB_FILE})")
        with self._lock:
            self._refuse_if_closed()
            if self._run is not None and self._run.active:
                r = self._run.info()
                where = f" in {r.run_dir}" if r.run_dir else ""
                at = f"step {r.step} of {r.total_steps}" if r.total_steps else r.state
                raise EngineBusy(
                    f"the engine is busy with a run{where} ({at}); stop it before starting another"
                )
            run = _Run(f"{os.getpid()}-{next(self._ids)}", job, job_toml, resume_from, client)
            self._run = run
            self._idle_since = None
            self._exit_now = False
            self._broadcast(RunMark("started", run.info()))
            self._thread = threading.Thread(
                target=self._drive, args=(run,), name="orchard-engine-run", daemon=True
            )
            self._thread.start()
            log.info("run %s started for %s%s", run.run_id, client or "a client",
                     f" (resuming {resume_from})" if resume_from else "")  # fmt: skip
            return run.info()

    def stop(self, reason: str = "") -> RunInfo | None:
        """Ask the run to stop at the next step boundary with a checkpoint; None if none is going."""
        with self._lock:
            run = self._run
            if run is None or not run.active:
                return None
            log.info("stop requested%s", f": {reason}" if reason else "")
            run.stop.set()
            return run.info()

    def watch(self, client: str, history: bool = True) -> Watcher:
        """Attach a client: "attached", the run's history, "history_end", then live events."""
        watcher = Watcher(client)
        with self._lock:
            self._refuse_if_closed()
            run = self._run
            items: list[Event | RunMark | tuple] = [
                RunMark("attached", run.info() if run else None)
            ]
            if history and run is not None:
                items += run.history.snapshot()
            items.append(RunMark("history_end", run.info() if run else None))
            watcher.extend(items)
            self._watchers.append(watcher)
            self._idle_since = None
            self._exit_now = False
        log.info("client %s attached (%d attached)", client or "?", len(self._watchers))
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        watcher.close()
        with self._lock:
            if watcher in self._watchers:
                self._watchers.remove(watcher)
                log.info("client %s detached (%d attached)", watcher.client or "?",
                         len(self._watchers))  # fmt: skip
            self._update_idle()

    def release(self, client: str) -> bool:
        """``client`` is leaving: its streams close; True when the engine now exits (no run
        going and no other client)."""
        with self._lock:
            for w in [w for w in self._watchers if w.client == client]:
                self.unwatch(w)
            if not self._busy():
                self._exit_now = True
            return self._exit_now

    def should_exit(self) -> bool:
        with self._lock:
            if self._exit_now:
                return True
            return (
                self._idle_since is not None
                and self._clock() - self._idle_since >= self.idle_exit_s
            )

    def close_if_idle(self) -> bool:
        """Refuse every later start and watch, if the engine is still idle; True when closed.
        The process calls it before it exits, so no client is accepted and then dropped."""
        with self._lock:
            if self._busy():
                self._exit_now = False
                return False
            self._closed = True
            return True

    def wait_run(self, timeout: float | None = None) -> bool:
        """For tests and shutdown: True once no run thread is going."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    # the run's thread ---------------------------------------------------------------------------
    def _drive(self, run: _Run) -> None:
        awake = self._keep_awake()
        try:
            handle = self._launch(run.job, lambda e: self._sink(run, e), run.stop,
                                  run.resume_from or None)  # fmt: skip
            result = handle.wait()
            run.status = getattr(result, "status", "") or run.history.state
        except Exception as e:  # noqa: BLE001 - the run ends "failed", clients see why
            log.exception("run %s failed", run.run_id)
            message = str(e) or type(e).__name__
            self._sink(run, LogEvent("error", message))
            self._sink(run, StateEvent("failed", message, run.history.run_dir))
            run.status = "failed"
        finally:
            awake.release()
            with self._lock:
                run.active = False
                info = run.info()
                self._broadcast(RunMark("ended", info))
                alone = not self._watchers
                self._update_idle()
            log.info("run %s ended: %s", run.run_id, run.status)
            if alone:  # nobody is watching: the user learns it from the desktop
                where = Path(info.run_dir).name if info.run_dir else "the run"
                self._announce(
                    "Orchard", f"{where} {run.status}: step {info.step} of {info.total_steps}"
                )

    def _sink(self, run: _Run, event: Event) -> None:
        with self._lock:
            run.history.add(event)
            if run is self._run:
                self._broadcast(event)

    # helpers (lock held) -----------------------------------------------------------------------
    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise EngineClosing("the engine process is exiting (it was idle); start a new one")

    def _broadcast(self, item: Event | RunMark) -> None:
        gone = False
        for w in self._watchers:
            w.push(item)
            gone = gone or w.closed
        if gone:
            self._watchers = [w for w in self._watchers if not w.closed]
            self._update_idle()

    def _busy(self) -> bool:
        return bool(self._watchers) or (self._run is not None and self._run.active)

    def _update_idle(self) -> None:
        if self._busy():
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = self._clock()
