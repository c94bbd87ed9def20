"""metrics.jsonl (one JSON object a line) and progress with an ETA."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.events import EventSink, MetricEvent, ProgressEvent

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Appends rows to ``run_dir/metrics.jsonl`` and forwards them to the sink."""

    def __init__(self, run_dir: str | Path, sink: EventSink | None, resume_step: int | None = None):
        self.path = Path(run_dir) / METRICS_FILE
        self.sink = sink
        if resume_step is not None:
            truncate_after(self.path, resume_step)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def emit(self, event: MetricEvent) -> None:
        self._file.write(json.dumps(event.to_json()) + "\n")
        self._file.flush()
        if self.sink is not None:
            self.sink(event)

    def close(self) -> None:
        self._file.close()


def truncate_after(path: Path, step: int) -> None:
    """Drop rows past ``step`` (written after the checkpoint a resume starts from)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a torn last line from a crash
        if int(row.get("step", 0)) <= step:
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a metrics.jsonl (skipping a torn last line)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            log.warning("%s: skipping an unreadable metrics line", path)
    return rows


class Progress:
    """ETA from a moving average of the recent step time: resumed steps do not count, and
    steps redone after a recovery (the step number going back) do not distort it."""

    SMOOTHING = 0.2  # weight of the newest step time

    def __init__(
        self, start_step: int, total_steps: int, clock: Callable[[], float] = time.perf_counter
    ):
        self.start_step = start_step
        self.total = total_steps
        self._clock = clock
        self.t0 = clock()
        self._last = (self.t0, start_step)
        self._step_s: float | None = None

    def event(self, step: int) -> ProgressEvent:
        now = self._clock()
        last_t, last_step = self._last
        if step > last_step:
            per_step = (now - last_t) / (step - last_step)
            a = self.SMOOTHING
            self._step_s = (
                per_step if self._step_s is None else a * per_step + (1 - a) * self._step_s
            )
        self._last = (now, step)
        eta = self._step_s * (self.total - step) if self._step_s is not None else None
        return ProgressEvent(step=step, total_steps=self.total, elapsed_s=now - self.t0, eta_s=eta)
