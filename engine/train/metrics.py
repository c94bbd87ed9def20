"""metrics.jsonl (one JSON object a line) and progress with an ETA."""

from __future__ import annotations

import json
import logging
import time
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
    """ETA from the mean step time of this session (resumed steps do not count)."""

    def __init__(self, start_step: int, total_steps: int):
        self.start_step = start_step
        self.total = total_steps
        self.t0 = time.perf_counter()

    def event(self, step: int) -> ProgressEvent:
        elapsed = time.perf_counter() - self.t0
        done = step - self.start_step
        eta = elapsed / done * (self.total - step) if done > 0 else None
        return ProgressEvent(step=step, total_steps=self.total, elapsed_s=elapsed, eta_s=eta)
