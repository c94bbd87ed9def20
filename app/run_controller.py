"""The app's side of the engine process: start, stop and watch runs, never waiting on them.

The engine (``engine/service``) is a process of its own, found through its connection file or
started on the first Start. One Watch stream per app carries its events: a stream thread
feeds them to the bridge, which re-emits them on the GUI thread as the signals the pages
have always received. Start, stop and release are calls on short-lived threads. Closing the
app (or its crash) leaves the run going; the next app attaches and replays its history.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.bridge import EngineBridge, RunAttached, RunEnded
from app.tasks import describe_error
from engine.config import ConfigError, JobSpec
from engine.events import LogEvent, StateEvent
from engine.service.info import RunInfo, RunMark

log = logging.getLogger(__name__)


def engine_lost_message(folder: Path | None) -> str:
    from engine.service.connection import LOG_FILE, engine_dir

    log_path = (folder or engine_dir()) / LOG_FILE
    return (
        "The engine process stopped unexpectedly. The run's last checkpoint is in its folder "
        f"(Resume on the Runs page). The engine's log: {log_path}"
    )


class RunController(QObject):
    started = Signal(object)  # the JobSpec that started
    ended = Signal(str)  # "" on a normal end, else the error message

    def __init__(self, bridge: EngineBridge, parent: QObject | None = None,
                 folder: Path | None = None):  # fmt: skip
        super().__init__(parent)
        self.bridge = bridge
        self.folder = folder  # None: the per-user engine folder, looked up on each connect
        self.client_id = f"app-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.job: JobSpec | None = None
        self._lock = threading.Lock()
        self._client: Any = None  # EngineClient (grpc is imported off the GUI thread)
        self._stream: Any = None  # WatchStream
        self._running = False
        self._idle = threading.Event()
        self._idle.set()
        self._stop_asked = False
        self._leaving = False  # the window closed: open no stream any more
        bridge.ended.connect(lambda e: self.ended.emit(e.message))

    @property
    def running(self) -> bool:
        """A run this app follows is going (started here, or attached to)."""
        return self._running

    # the API (GUI thread; every call returns at once) ----------------------------------------
    def attach(self) -> None:
        """Follow the engine's run if an engine is running (none is started)."""
        _thread(self._attach_main, "orchard-attach")

    def start(self, job: JobSpec, resume_from: str | None = None) -> None:
        if self._running:
            raise RuntimeError("a run is already going; stop it first")
        self.job = job
        self._set_running(True)
        self._stop_asked = False
        # Not a daemon: an app closed right after Start still gets the run started (or the
        # stop it asked for sent) before it exits.
        _thread(self._start_main, "orchard-start", job, resume_from, daemon=False)
        self.started.emit(job)

    def stop(self) -> None:
        """Ask the run to stop; it checkpoints and reports ``stopped`` through events."""
        if not self._running:
            return
        self._stop_asked = True
        client = self._client
        if client is not None:  # else the start thread sends the stop once the run exists
            _thread(self._call, "orchard-stop", client.stop_run, "Stop in the app", daemon=False)

    def join(self, timeout: float) -> bool:
        """For shutdown and tests only (never on the GUI thread during normal use)."""
        self._idle.wait(timeout)
        return not self._running

    def detach(self) -> None:
        """Stop following the run; it goes on in the engine (the window closes, training doesn't)."""
        self._leaving = True
        self._drop_stream()
        self._set_running(False)

    def release(self) -> None:
        """Detach and tell the engine this app leaves: with no run and no other client, it
        exits now rather than after its idle time. The call runs on a non-daemon thread, so an
        exiting app still makes it."""
        self.detach()
        client = self._client
        if client is not None:
            _thread(self._call, "orchard-release", client.release, self.client_id, daemon=False)

    # worker threads -----------------------------------------------------------------------------
    def _attach_main(self) -> None:
        try:
            client = self._connect(start=False)
            if client is not None:
                self._open_stream(client, announce=True)
        except Exception as e:  # noqa: BLE001 - no engine to attach to is not an error
            log.warning("could not attach to the engine: %s", describe_error(e))

    def _start_main(self, job: JobSpec, resume_from: str | None) -> None:
        from engine.rpc.engine_client import EngineRefused, EngineUnavailable
        from engine.service.launcher import job_toml_for_engine

        try:
            toml = job_toml_for_engine(job)
            for attempt in (1, 2):
                client = self._connect(start=True)
                self._open_stream(client, announce=False)  # before StartRun: no event missed
                try:
                    client.start_run(toml, str(resume_from or ""), self.client_id)
                    break
                except EngineUnavailable:  # it was exiting (idle) as we called: start another
                    self._forget(client)
                    if attempt == 2:
                        raise
            if self._stop_asked:
                client.stop_run("Stop in the app")
        except EngineRefused as e:
            self._refused(describe_error(e))
            if e.code == "FAILED_PRECONDITION":  # busy with a run this app did not start:
                self._drop_stream()  # show that one instead, from its first step
                self._open_stream(client, announce=True)
        except Exception as e:  # noqa: BLE001 - reported to the user, traceback to the log
            log.warning("run did not start", exc_info=True)
            self._refused(describe_error(e))

    def _stream_main(self, client: Any, stream: Any, announce: bool) -> None:
        from engine.rpc.engine_client import EngineRefused, EngineUnavailable

        replay = False
        try:
            for item in stream:
                if type(item) is RunMark:
                    self._on_mark(item, announce)
                else:
                    self.bridge.sink(item)
        except EngineUnavailable as e:
            log.warning("the engine stream ended: %s", e)
            self._forget(client)
            if self._running:
                message = engine_lost_message(self.folder)
                self.bridge.sink(LogEvent("error", message))
                self.bridge.sink(StateEvent("failed", message))
                self._end(message)
        except EngineRefused as e:  # this app fell too far behind (it was frozen): the
            log.warning("the engine dropped this app's stream: %s", e)  # replay catches up
            replay = e.code == "RESOURCE_EXHAUSTED"
        except Exception:  # noqa: BLE001 - a stream thread must never die silently
            log.exception("engine stream failed")
        finally:
            with self._lock:
                if self._stream is stream:
                    self._stream = None
        if replay:
            self._open_stream(client, announce=True)

    def _on_mark(self, mark: RunMark, announce: bool) -> None:
        run = mark.run
        if mark.change == "ended":
            if self._running:
                self._end("")
        elif run is not None and (
            (mark.change == "attached" and announce)
            or (mark.change == "started" and run.client != self.client_id)
        ):  # a run this app did not start: show it, history first
            self._follow(run)

    def _follow(self, run: RunInfo) -> None:
        try:
            self.job = JobSpec.from_toml(run.job_toml, source="the engine's run")
        except ConfigError as e:
            log.warning("the engine's run has a job this app cannot read: %s", e)
        if run.active:
            self._set_running(True)
        self.bridge.sink(RunAttached(run))

    # helpers ------------------------------------------------------------------------------------
    def _connect(self, start: bool) -> Any:
        from engine.service.launcher import connect_engine

        with self._lock:
            if self._client is not None:
                return self._client
        client = connect_engine(self.folder, start=start)
        with self._lock:
            if self._client is None:
                self._client = client
            elif client is not None:
                client.close()
            return self._client

    def _open_stream(self, client: Any, announce: bool) -> None:
        with self._lock:
            if self._stream is not None or self._leaving:
                return
            stream = self._stream = client.watch(self.client_id, history=announce)
        _thread(self._stream_main, "orchard-engine-events", client, stream, announce)

    def _drop_stream(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()

    def _forget(self, client: Any) -> None:
        with self._lock:
            if self._client is client:
                self._client = None

    def _refused(self, message: str) -> None:
        self.bridge.sink(LogEvent("error", message))
        self.bridge.sink(StateEvent("failed", message))
        self._end(message)

    def _end(self, message: str) -> None:
        self._set_running(False)
        self.bridge.sink(RunEnded(message))

    def _set_running(self, running: bool) -> None:
        self._running = running
        if running:
            self._idle.clear()
        else:
            self._idle.set()

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - the engine may be gone already; nothing to undo
            log.info("engine call %s failed: %s", getattr(fn, "__name__", fn), describe_error(e))


def _thread(
    target: Callable[..., Any], name: str, *args: Any, daemon: bool = True
) -> threading.Thread:
    t = threading.Thread(target=target, args=args, name=name, daemon=daemon)
    t.start()
    return t
