"""A run's events, kept for replay to a client that attaches late.

It follows metrics.jsonl row for row: a resumed run's earlier steps are read from the file
once the run is running (the coordinator has truncated it to the checkpoint by then), and a
recovery drops the steps it redoes, as the coordinator truncates the file. Metric events are
kept as tuples of numbers and strings, which Python's cycle collector does not track, so a
long run's history costs the engine process no collector time (see app/bridge.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engine.events import (
    DownloadEvent,
    Event,
    LogEvent,
    MetricEvent,
    ProgressEvent,
    ShipEvent,
    StateEvent,
)
from engine.train.metrics import METRICS_FILE, read_metrics

log = logging.getLogger(__name__)

ROW_KEYS = ("step", "kind", "time", "worker")  # metrics.jsonl's own keys; the rest are values


def row_to_event(row: dict[str, Any]) -> MetricEvent:
    """A metrics.jsonl row (``MetricEvent.to_json``) back to its event."""
    values = {k: float(v) for k, v in row.items() if k not in ROW_KEYS}
    worker = row.get("worker")
    return MetricEvent(
        int(row["step"]), values, str(row.get("kind", "train")),
        int(worker) if worker is not None else None, float(row.get("time", 0.0)),
    )  # fmt: skip


def _pack(e: MetricEvent) -> tuple:
    return (e.step, e.kind, e.worker, e.time, tuple(e.values), tuple(e.values.values()))


def unpack(t: tuple) -> MetricEvent:
    """A metric event from its packed tuple (``RunHistory.snapshot`` hands those out)."""
    step, kind, worker, created, names, values = t
    return MetricEvent(step, dict(zip(names, values, strict=True)), kind, worker, created)


class RunHistory:
    """Every event of one run, in order, except progress and transfers: of those only the
    last counts (the last progress; the download's and each worker's last shipment, replayed
    only while the run is still preparing)."""

    def __init__(self) -> None:
        self._items: list[Event | tuple] = []
        self.progress: ProgressEvent | None = None
        self.transfers: dict[tuple[str, int], DownloadEvent | ShipEvent] = {}
        self.run_dir = ""
        self.state = ""
        self.message = ""
        self.total_steps = 0
        self.step = 0
        self._seeded = False

    def add(self, event: Event) -> None:
        t = type(event)
        if t is MetricEvent:
            self._items.append(_pack(event))  # type: ignore[arg-type]
            if event.kind == "train":  # type: ignore[union-attr]
                self.step = event.step  # type: ignore[union-attr]
            return
        if t is ProgressEvent:
            self.progress = event  # type: ignore[assignment]
            self.step, self.total_steps = event.step, event.total_steps  # type: ignore[union-attr]
            return
        if t is DownloadEvent:
            self.transfers[("download", 0)] = event  # type: ignore[assignment]
            return
        if t is ShipEvent:
            self.transfers[("ship", event.rank)] = event  # type: ignore[union-attr,assignment]
            return
        if t is StateEvent:
            self._on_state(event)  # type: ignore[arg-type]
        if t in (StateEvent, LogEvent):
            self._items.append(event)

    def _on_state(self, e: StateEvent) -> None:
        self.state, self.message = e.state, e.message
        if e.run_dir:
            self.run_dir = e.run_dir
        total = e.detail.get("total_steps")
        if isinstance(total, int):
            self.total_steps = total
        if e.state != "running":
            return
        if e.detail.get("recovered"):  # the coordinator truncates metrics.jsonl the same way
            self._drop_after(int(e.detail.get("redo_from", 0)))
        elif not self._seeded:
            self._seeded = True
            start = int(e.detail.get("start_step", 0))
            self.step = start
            if start and self.run_dir:
                self._seed(Path(self.run_dir) / METRICS_FILE)

    def _seed(self, path: Path) -> None:
        """A resumed run: its steps before the checkpoint, from the run folder."""
        try:
            rows = read_metrics(path) if path.is_file() else []
        except OSError as e:
            log.warning("cannot read %s for the history: %s", path, e)
            return
        self._items.extend(_pack(row_to_event(r)) for r in rows if "step" in r)

    def _drop_after(self, step: int) -> None:
        self._items = [i for i in self._items if type(i) is not tuple or i[0] <= step]

    def snapshot(self) -> list[Event | tuple]:
        """The replay, cheap enough to take under the service's lock (references only): the
        events in order, metrics still packed (``unpack``), then the last progress."""
        out = list(self._items)
        if self.state in ("", "preparing"):  # files still on their way: show where they are
            out += self.transfers.values()
        if self.progress is not None:
            out.append(self.progress)
        return out
