"""Starts and stops runs on background threads; the GUI only sees events and signals.

The engine call that drives a run blocks until it ends, so it lives on its own thread.
Its events go through the bridge (queued onto the GUI thread); its end, normal or not,
comes back as ``ended``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.bridge import EngineBridge
from app.tasks import describe_error
from engine.config import JobSpec
from engine.events import LogEvent, StateEvent

log = logging.getLogger(__name__)


def drive_run(
    job: JobSpec, sink: Any, stop_event: threading.Event, resume_from: str | None = None
) -> str:
    """Run ``job`` with the runtime (the multi-worker coordinator) until it ends; with
    ``resume_from``, continue that run folder from its last checkpoint.

    Blocks, so it runs on the controller's thread; ``stop_event`` stops it at the next step
    boundary with a checkpoint. Returns the final status."""
    from engine.runtime import start_run  # imports MLX: keep it off the app's startup path

    handle = start_run(job, sink, stop_event, resume_from=resume_from)
    result = handle.wait()
    return result.status if result is not None else "unknown"


class RunController(QObject):
    started = Signal(object)  # the JobSpec that started
    ended = Signal(str)  # "" on a normal end, else the error message

    def __init__(self, bridge: EngineBridge, parent: QObject | None = None):
        super().__init__(parent)
        self.bridge = bridge
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.job: JobSpec | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, job: JobSpec, resume_from: str | None = None) -> None:
        if self.running:
            raise RuntimeError("a run is already going; stop it first")
        self.job = job
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._main, args=(job, self._stop, resume_from), name="orchard-run",
            daemon=True,
        )  # fmt: skip
        self._thread.start()
        self.started.emit(job)

    def stop(self) -> None:
        """Ask the run to stop; it checkpoints and reports ``stopped`` through events."""
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """For shutdown and tests only (never on the GUI thread during normal use)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _main(self, job: JobSpec, stop_event: threading.Event, resume_from: str | None) -> None:
        sink = self.bridge.sink
        try:
            drive_run(job, sink, stop_event, resume_from)
        except Exception as e:  # noqa: BLE001 - reported to the user, traceback to the log
            log.exception("run failed")
            message = describe_error(e)
            sink(LogEvent("error", message))
            sink(StateEvent("failed", message))
            self.ended.emit(message)
            return
        self.ended.emit("")
