"""Engine events in, Qt signals out.

``EngineBridge.sink(event)`` is called from whatever thread an event arrives on (the
engine process's Watch stream, a zeroconf thread, a gRPC callback). Events wait in a queue; one queued wake-up
drains them on the GUI thread, a few milliseconds at a time, and re-emits each as a typed
signal. So views only ever run on the GUI thread, and a burst of thousands of events costs
the window a series of short slices instead of one long freeze.

Metric events wait as ``marshal`` bytes, not as the dataclasses they arrive as: a fast run
can queue 100k of them, and each dataclass is an object Python's cycle collector walks with
the GIL held (a 700 ms freeze measured on 2 cores). Tuples were not enough: a tuple is
tracked when made and only untracked by the collection that first sees it, and the app
collects on the GUI thread (``app/gc_gui_thread.py``), so a flood of them made its young
collections 40-100 ms. Bytes are never tracked; a metric whose values marshal cannot write
waits as the event itself.

Two app-side markers travel the same queue, so they reach the GUI in order with the events
around them: ``RunAttached`` (the app attached to a run it did not start: reset the Monitor,
then its history follows) and ``RunEnded`` (the run's thread ended, after its last event).
"""

from __future__ import annotations

import collections
import logging
import marshal
import threading
import time
from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt, Signal

from engine.events import (
    DownloadEvent,
    Event,
    LogEvent,
    MetricEvent,
    PeerEvent,
    ProgressEvent,
    ShipEvent,
    StateEvent,
)
from engine.service.info import RunInfo

log = logging.getLogger(__name__)

DRAIN_BUDGET_S = 0.004  # GUI time per slice; the rest of the frame stays free for painting


@dataclass(frozen=True)
class RunAttached:
    """The app attached to a run it did not start (at launch, or one another client began);
    that run's history (from step 1) follows in the queue."""

    run: RunInfo


@dataclass(frozen=True)
class RunEnded:
    """The run's thread ended (its workers are stopped): "" normally, else why it never ran."""

    message: str = ""


class EngineBridge(QObject):
    """Adapts ``engine.events`` dataclasses to one Qt signal per event type."""

    metric = Signal(object)  # MetricEvent
    progress = Signal(object)  # ProgressEvent
    state = Signal(object)  # StateEvent
    log = Signal(object)  # LogEvent
    peer = Signal(object)  # PeerEvent
    transfer = Signal(object)  # DownloadEvent, ShipEvent (the model on its way to the workers)
    attached = Signal(object)  # RunAttached
    ended = Signal(object)  # RunEnded
    _wake = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._queue: collections.deque[Event | RunAttached | RunEnded | bytes] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._wake.connect(self._drain, Qt.ConnectionType.QueuedConnection)
        self._signals = {
            MetricEvent: self.metric,
            ProgressEvent: self.progress,
            StateEvent: self.state,
            LogEvent: self.log,
            PeerEvent: self.peer,
            DownloadEvent: self.transfer,
            ShipEvent: self.transfer,
            RunAttached: self.attached,
            RunEnded: self.ended,
        }

    def sink(self, event: Event | RunAttached | RunEnded) -> None:
        """An ``engine.events.EventSink``: safe to call from any thread, never blocks on the GUI."""
        item = _pack(event) if type(event) is MetricEvent else event
        with self._lock:
            self._queue.append(item)
            if self._scheduled:
                return
            self._scheduled = True
        self._wake.emit()

    def pending(self) -> int:
        return len(self._queue)

    def _drain(self) -> None:
        deadline = time.perf_counter() + DRAIN_BUDGET_S
        while time.perf_counter() < deadline:
            with self._lock:
                if not self._queue:
                    self._scheduled = False
                    return
                item = self._queue.popleft()
            event = _unpack(item) if type(item) is bytes else item
            signal = self._signals.get(type(event))
            if signal is None:
                log.warning("ignoring unknown engine event %r", type(event).__name__)
            else:
                signal.emit(event)
        # More waiting: the next slice in the event loop's next pass, after painting and input.
        # (A zero timer would run in this same pass: two slices back to back.)
        self._wake.emit()


def _pack(e: MetricEvent) -> bytes | MetricEvent:
    """Bytes the cycle collector never tracks (the temporary tuple dies here, by refcount)."""
    try:
        return marshal.dumps((e.step, e.kind, e.worker, e.time, tuple(e.values),
                              tuple(e.values.values())))  # fmt: skip
    except ValueError:  # a value marshal cannot write (not a plain number): keep the event
        return e


def _unpack(b: bytes) -> MetricEvent:
    step, kind, worker, created, names, values = marshal.loads(b)
    return MetricEvent(step, dict(zip(names, values, strict=True)), kind, worker, created)
