"""Monitor: live charts, progress with ETA, the log, and Stop.

Charts take live events (``on_metric``) and a run's earlier rows (``load_history``: rows as
metrics.jsonl holds them), so a resumed or re-attached run shows its whole curve.
Measured against predicted: the step-time chart draws the planner's ``predicted_step_s``
(dist.mode auto) dashed beside the measured step, and a line of figures above the charts
says the plan, the latest step against it, the scaling efficiency and each worker's share.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QShowEvent, QTextCursor
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QWidget,
)

from app.widgets.charts import ChartClock, LiveChart
from app.widgets.page import Page
from app.widgets.run_figures import RunFigures
from app.widgets.text import ElidedLabel, home_path
from engine.events import LogEvent, MetricEvent, ProgressEvent, StateEvent
from engine.service.info import RunInfo

LOG_LINES = 5000
IDLE_TEXT = "No run yet. Press Start training to run the job as configured."
ENDED = ("finished", "failed", "stopped")
TRAIN_SERIES = (  # metrics key, chart attribute, series
    ("train_loss", "loss", "train"),
    ("learning_rate", "lr", "lr"),
    ("tokens_per_s", "speed", "tokens/s"),
    ("grad_norm", "grad", "grad norm"),
    ("step_time_s", "steps", "measured"),
    ("predicted_step_s", "steps", "predicted"),
)
STATE_TEXT = {
    "preparing": "Preparing",
    "running": "Training",
    "checkpointed": "Training (checkpoint saved)",
    "finished": "Finished",
    "failed": "Failed",
    "stopped": "Stopped",
}


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "–"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class MonitorPage(Page):
    title = "Monitor"
    subtitle = "Watch the run live. Stop keeps a checkpoint so the run can continue later."

    start_requested = Signal()
    stop_requested = Signal()
    results_requested = Signal()  # "See the results" after a run wrote its adapter

    def __init__(self) -> None:
        super().__init__(scroll=False)
        top = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("primary")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.start_button.clicked.connect(self.start_requested)
        self.stop_button.clicked.connect(self.stop_requested)
        self.state_label = ElidedLabel(IDLE_TEXT, Qt.TextElideMode.ElideRight)
        self.results_button = QPushButton("See the results →")
        self.results_button.setToolTip("Open the adapter this run wrote, and try it, in Results")
        self.results_button.clicked.connect(self.results_requested)
        self.results_button.hide()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("No run yet")
        self.eta = QLabel("")
        top.addWidget(self.start_button)
        top.addWidget(self.stop_button)
        top.addWidget(self.state_label, 1)
        top.addWidget(self.results_button)
        self.body.addLayout(top)
        bar = QHBoxLayout()
        bar.addWidget(self.progress, 1)
        bar.addWidget(self.eta)
        self.body.addLayout(bar)
        self.figures = RunFigures()
        self.body.addWidget(self.figures)

        self.loss = LiveChart("Loss", "loss")
        self.loss.add_series("train", "#2e7d32")
        self.loss.add_series("validation", "#c62828", symbol="o")
        self.lr = LiveChart("Learning rate", legend=False)
        self.lr.add_series("lr", "#1565c0")
        self.speed = LiveChart("Throughput", "tokens/s", legend=False)
        self.speed.add_series("tokens/s", "#ef6c00")
        self.grad = LiveChart("Gradient norm", legend=False)
        self.grad.add_series("grad norm", "#6a1b9a")
        self.workers = LiveChart("Step time per worker", "seconds")
        self.steps = LiveChart("Step time: measured and predicted", "seconds")
        self.steps.add_series("measured", "#ef6c00")
        self.steps.add_series("predicted", "#1565c0", dash=True)
        self.charts = [self.loss, self.steps, self.lr, self.speed, self.grad, self.workers]
        self.clock = ChartClock(self.charts, parent=self)

        grid_host = self.chart_area = QWidget()  # things may float over it (the transfers)
        grid = QGridLayout(grid_host)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.loss, 0, 0)
        grid.addWidget(self.steps, 0, 1)
        grid.addWidget(self.workers, 0, 2)
        grid.addWidget(self.lr, 1, 0)
        grid.addWidget(self.speed, 1, 1)
        grid.addWidget(self.grad, 1, 2)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_LINES)
        self.log_view.setPlaceholderText("The run's log appears here.")
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(grid_host)
        split.addWidget(self.log_view)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        self.body.addWidget(split, 1)
        self.run_dir = ""
        self.state = ""
        self.start_step: int | None = None  # where this run (or its resume) began
        self._elapsed: float | None = None
        self._last_message = ""  # the last line logged: a StateEvent may repeat a LogEvent
        self._figures_timer = QTimer(self, singleShot=True, interval=200)  # not per event
        self._figures_timer.timeout.connect(self.figures.refresh)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        if not event.spontaneous():  # the page comes up (not the window restored)
            self.clock.reveal()  # charts appear one per tick, not all in this frame
        super().showEvent(event)

    # event slots (GUI thread) ---------------------------------------------------------------
    def reset(self, total_steps: int, keep_message: bool = False) -> None:
        """Empty charts for a run of ``total_steps``; the last run's failure or note goes (it
        is not about this one) unless ``keep_message``."""
        if not keep_message:
            self.clear_message()
        for chart in self.charts:
            chart.clear_all()
        self.progress.setRange(0, max(total_steps, 1))
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m steps")
        self.eta.setText("")
        self.log_view.clear()
        self.run_dir = ""
        self.state = ""  # the last run's end state is not this run's
        self.start_step = None
        self._elapsed = None
        self._last_message = ""
        self.figures.clear()
        self.results_button.hide()
        self.set_running(True)
        self.state_label.set_full_text(STATE_TEXT["preparing"])

    def show_attached(self, run: RunInfo) -> None:
        """After ``reset``: the run trained in the engine process before this window attached;
        its history (from step 1) arrives next through the usual slots, then live events."""
        where = run.run_dir or run.resume_from
        self.run_dir = where
        self.append_log(
            LogEvent("info", f"Attached to the run in {home_path(where)}: its history, then live")
        )
        if not run.active:
            self.state_label.setText(STATE_TEXT.get(run.state, run.state))

    def adapter_of(self, e: StateEvent) -> str:
        """The adapter an ended run wrote, if it trained: a run stopped before its first step
        (or resumed and stopped at once) writes the untrained one, nothing to try in Results."""
        adapter = str(e.detail.get("adapter_dir") or "")
        trained = e.state == "finished" or self.progress.value() > 0  # from its checkpoint on
        return adapter if e.state in ("finished", "stopped") and trained else ""

    def set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def _points(
        self, kind: str, worker: int | None, v: dict[str, Any]
    ) -> Iterator[tuple[LiveChart, str, float]]:
        """(chart, series, value) for each number of one metrics row."""
        if kind == "train":
            for key, chart, series in TRAIN_SERIES:
                if key in v:
                    yield getattr(self, chart), series, v[key]
        elif kind == "val" and "val_loss" in v:
            yield self.loss, "validation", v["val_loss"]
        elif kind == "worker":
            w = worker if worker is not None else 0
            if "compute_s" in v:
                yield self.workers, f"w{w} compute", v["compute_s"]
            if "comm_s" in v:
                yield self.workers, f"w{w} comm", v["comm_s"]
            if "compute_s" not in v and "step_time_s" in v:
                yield self.workers, f"w{w} step", v["step_time_s"]

    def on_metric(self, e: MetricEvent) -> None:
        for chart, series, y in self._points(e.kind, e.worker, e.values):
            chart.append(series, e.step, y)
        if (
            self.figures.take(e.step, e.kind, e.worker, e.values)
            and not self._figures_timer.isActive()
        ):
            self._figures_timer.start()

    def load_history(self, rows: Iterable[dict[str, Any]]) -> None:
        """Plot a run's earlier rows (as metrics.jsonl holds them) in front of the live points.

        Rows past the step a resume starts from are left out: the run redoes those steps."""
        rows = list(rows)
        series: dict[tuple[int, str], tuple[LiveChart, list[float], list[float]]] = {}
        for row in sorted(rows, key=lambda r: int(r.get("step", 0))):
            step = int(row.get("step", 0))
            if self.start_step is not None and step > self.start_step:
                continue
            worker = row.get("worker")
            kind = str(row.get("kind", "train"))
            for chart, name, y in self._points(kind, worker, row):
                _, xs, ys = series.setdefault((id(chart), name), (chart, [], []))
                xs.append(step)
                ys.append(float(y))
        for (_, name), (chart, xs, ys) in series.items():
            chart.put_history(name, xs, ys)
        for row in sorted(rows, key=lambda r: int(r.get("step", 0)))[-64:]:  # the newest figures
            if self.start_step is None or int(row.get("step", 0)) <= self.start_step:
                self.figures.take(int(row.get("step", 0)), str(row.get("kind", "train")),
                                  row.get("worker"), row, history=True)  # fmt: skip
        self.figures.refresh()

    def on_progress(self, e: ProgressEvent) -> None:
        self.progress.setRange(0, max(e.total_steps, 1))
        self.progress.setValue(e.step)
        self._elapsed = e.elapsed_s
        if self.state in ENDED:
            return  # a late progress event must not bring back an ETA
        self.eta.setText(f"elapsed {format_duration(e.elapsed_s)} · ETA {format_duration(e.eta_s)}")

    def on_state(self, e: StateEvent) -> None:
        self.state = e.state
        if e.run_dir:
            self.run_dir = e.run_dir
        text = STATE_TEXT.get(e.state, e.state.capitalize())
        self.state_label.set_full_text(f"{text}: {e.message}" if e.message else text)
        total = e.detail.get("total_steps")
        if e.state == "running" and isinstance(total, int):
            self.start_step = int(e.detail.get("start_step", 0))
            self.progress.setRange(0, max(total, 1))
            self.progress.setValue(self.start_step)
            for chart in self.charts:  # a resume redoes the steps past its checkpoint
                chart.drop_after(self.start_step)
        if e.state == "running" and isinstance(e.detail.get("plan"), dict):
            self.figures.set_plan(e.detail["plan"])
        if e.state in ENDED:
            self.set_running(False)
            took = "took" if e.state == "finished" else "ran for"
            elapsed = self._elapsed
            self.eta.setText(f"{took} {format_duration(elapsed)}" if elapsed is not None else "")
            self.results_button.setVisible(bool(self.adapter_of(e)))
        if e.message and e.message == self._last_message:  # a recovery says it once
            return
        self.append_log(
            LogEvent("info" if e.state != "failed" else "error", f"[{e.state}] {e.message}".strip())
        )
        self._last_message = e.message

    def append_log(self, e: LogEvent) -> None:
        self._last_message = e.message
        stamp = time.strftime("%H:%M:%S", time.localtime(e.time))
        prefix = "" if e.level == "info" else f"{e.level.upper()}: "
        self.log_view.appendPlainText(f"{stamp}  {prefix}{e.message}")
        self.log_view.moveCursor(QTextCursor.MoveOperation.End)
