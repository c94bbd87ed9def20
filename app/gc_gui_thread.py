"""Python's cycle collector runs on the GUI thread only, from a timer.

Automatic collection runs in whichever thread happens to allocate when a threshold passes.
When that is a pool thread (a dataset read, the engine client's stream) and the garbage holds
Qt objects (a closed page, a dropped dialog), their C++ destructors run in that thread: they
take Qt's locks and then wait for the GIL, while the GUI thread holds the GIL and waits for
those locks. Seen here: the app froze mid-paint, its pool thread collecting a widget inside
``json.loads``. So while the app runs, automatic collection is off and a timer on the GUI
thread does the same work at the same thresholds (the pattern PyQt's own docs advise).
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

INTERVAL_MS = 250


class GuiThreadCollector(QObject):
    """Owns collection while it lives: ``gc.disable()`` now, ``close()`` gives it back."""

    def __init__(self, parent: QObject | None = None, interval_ms: int = INTERVAL_MS) -> None:
        super().__init__(parent)
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.collect_due)
        self._timer.start(interval_ms)

    def collect_due(self) -> int:
        """Collect the generations whose thresholds have passed (none: nothing to do);
        returns the generation collected, or -1."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        generation = -1
        for g in range(3):
            if thresholds[g] and counts[g] > thresholds[g]:
                generation = g
            else:
                break
        if generation >= 0:
            gc.collect(generation)
        return generation

    def close(self) -> None:
        """Stop the timer, collect once here, and let Python collect automatically again."""
        self._timer.stop()
        gc.collect()
        if self._was_enabled:
            gc.enable()
