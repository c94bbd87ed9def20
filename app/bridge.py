"""Engine events in, Qt signals out.

The engine calls ``EngineBridge.sink(event)`` from whatever thread it runs on (a training
thread, a zeroconf thread, a gRPC callback). Events wait in a queue; one queued wake-up
drains them on the GUI thread, a few milliseconds at a time, and re-emits each as a typed
signal. So views only ever run on the GUI thread, and a burst of thousands of events costs
the window a series of short slices instead of one long freeze.

Metric events wait as plain tuples, not as the dataclasses they arrive as: a fast run can
queue 100k of them, and each dataclass is an object Python's cycle collector walks on every
full pass, with the GIL held (a 700 ms freeze measured on 2 cores). Tuples of numbers and
strings are untracked by the collector, so a long queue costs it nothing.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from PySide6.QtCore import QObject, Qt, QTimer, Signal

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

log = logging.getLogger(__name__)

DRAIN_BUDGET_S = 0.008  # GUI time per slice; the rest of the frame stays free for painting


class EngineBridge(QObject):
    """Adapts ``engine.events`` dataclasses to one Qt signal per event type."""

    metric = Signal(object)  # MetricEvent
    progress = Signal(object)  # ProgressEvent
    state = Signal(object)  # StateEvent
    log = Signal(object)  # LogEvent
    peer = Signal(object)  # PeerEvent
    transfer = Signal(object)  # DownloadEvent, ShipEvent (the model on its way to the workers)
    _wake = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._queue: collections.deque[Event | tuple] = collections.deque()
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
        }

    def sink(self, event: Event) -> None:
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
            event = _unpack(item) if type(item) is tuple else item
            signal = self._signals.get(type(event))
            if signal is None:
                log.warning("ignoring unknown engine event %r", type(event).__name__)
            else:
                signal.emit(event)
        QTimer.singleShot(0, self._drain)  # more waiting: yield to painting and input first


def _pack(e: MetricEvent) -> tuple:
    """Only strings and numbers (a dict would keep the tuple tracked)."""
    return (e.step, e.kind, e.worker, e.time, tuple(e.values), tuple(e.values.values()))


def _unpack(t: tuple) -> MetricEvent:
    step, kind, worker, created, names, values = t
    return MetricEvent(step, dict(zip(names, values, strict=True)), kind, worker, created)
