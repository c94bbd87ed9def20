"""start_run(): a run on its own thread, with a handle the GUI and the CLI hold."""

from __future__ import annotations

import threading
from pathlib import Path

from engine.config import JobSpec
from engine.events import EventSink
from engine.runtime.coordinator import Coordinator, RunResult
from engine.runtime.warm_workers import WarmWorkers


class RunHandle:
    def __init__(self, coordinator: Coordinator, stop_event: threading.Event):
        self._coordinator = coordinator
        self._stop = stop_event
        self.result: RunResult | None = None
        self._thread = threading.Thread(target=self._main, name="orchard-run", daemon=True)

    def _main(self) -> None:
        self.result = self._coordinator.run()

    @property
    def run_dir(self) -> Path | None:
        return self._coordinator.run_dir

    def stop(self) -> None:
        """Ask for a stop at the next step boundary (final checkpoint, then workers stop);
        a step that does not end within its grace is abandoned (engine/runtime/recovery.py)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """The result once the run ended, or None if ``timeout`` passed first."""
        self._thread.join(timeout)
        return self.result

    def is_alive(self) -> bool:
        return self._thread.is_alive()


def start_run(
    job: JobSpec,
    sink: EventSink | None = None,
    stop_event: threading.Event | None = None,
    resume_from: str | Path | None = None,
    data_dir: Path | None = None,
    warm: WarmWorkers | None = None,
) -> RunHandle:
    """Start ``job`` on its workers in a background thread; returns at once. ``warm``: its
    local workers, spawned ahead by the caller (engine/runtime/warm_workers.py); the run
    takes them if they fit its settings and ends them otherwise."""
    job.validate()
    stop = stop_event or threading.Event()
    handle = RunHandle(Coordinator(job, sink, stop, resume_from, data_dir, warm), stop)
    handle._thread.start()
    return handle
