"""Monitor: live charts, progress with ETA, the log, and Stop."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QTextCursor
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
from engine.events import LogEvent, MetricEvent, ProgressEvent, StateEvent

LOG_LINES = 5000
STATE_TEXT = {
    "preparing": "Preparing: loading the model and data, starting workers…",
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

    def __init__(self) -> None:
        super().__init__(scroll=False)
        top = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("primary")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.start_button.clicked.connect(self.start_requested)
        self.stop_button.clicked.connect(self.stop_requested)
        self.state_label = QLabel("Not started. Press Start training to run the job as configured.")
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m steps")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.eta = QLabel("")
        top.addWidget(self.start_button)
        top.addWidget(self.stop_button)
        top.addWidget(self.state_label, 1)
        self.body.addLayout(top)
        bar = QHBoxLayout()
        bar.addWidget(self.progress, 1)
        bar.addWidget(self.eta)
        self.body.addLayout(bar)

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
        self.charts = [self.loss, self.lr, self.speed, self.grad, self.workers]
        self.clock = ChartClock(self.charts, parent=self)

        grid_host = QWidget()
        grid = QGridLayout(grid_host)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.loss, 0, 0, 1, 2)
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
        self._last_message = ""  # the last line logged: a StateEvent may repeat a LogEvent

    # event slots (GUI thread) ---------------------------------------------------------------
    def reset(self, total_steps: int) -> None:
        for chart in self.charts:
            chart.clear_all()
        self.progress.setRange(0, max(total_steps, 1))
        self.progress.setValue(0)
        self.eta.setText("")
        self.log_view.clear()
        self.run_dir = ""
        self.state = ""  # the last run's end state is not this run's
        self._last_message = ""
        self.set_running(True)
        self.state_label.setText(STATE_TEXT["preparing"])

    def set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def on_metric(self, e: MetricEvent) -> None:
        v = e.values
        if e.kind == "train":
            if "train_loss" in v:
                self.loss.append("train", e.step, v["train_loss"])
            if "learning_rate" in v:
                self.lr.append("lr", e.step, v["learning_rate"])
            if "tokens_per_s" in v:
                self.speed.append("tokens/s", e.step, v["tokens_per_s"])
            if "grad_norm" in v:
                self.grad.append("grad norm", e.step, v["grad_norm"])
        elif e.kind == "val" and "val_loss" in v:
            self.loss.append("validation", e.step, v["val_loss"])
        elif e.kind == "worker":
            w = e.worker if e.worker is not None else 0
            if "compute_s" in v:
                self.workers.append(f"w{w} compute", e.step, v["compute_s"])
            if "comm_s" in v:
                self.workers.append(f"w{w} comm", e.step, v["comm_s"])
            if "compute_s" not in v and "step_time_s" in v:
                self.workers.append(f"w{w} step", e.step, v["step_time_s"])

    def on_progress(self, e: ProgressEvent) -> None:
        self.progress.setRange(0, max(e.total_steps, 1))
        self.progress.setValue(e.step)
        self.eta.setText(f"elapsed {format_duration(e.elapsed_s)} · ETA {format_duration(e.eta_s)}")

    def on_state(self, e: StateEvent) -> None:
        self.state = e.state
        if e.run_dir:
            self.run_dir = e.run_dir
        text = STATE_TEXT.get(e.state, e.state)
        self.state_label.setText(f"{text}: {e.message}" if e.message else text)
        total = e.detail.get("total_steps")
        if e.state == "running" and isinstance(total, int):
            self.progress.setRange(0, max(total, 1))
            self.progress.setValue(int(e.detail.get("start_step", 0)))
        if e.state in ("finished", "failed", "stopped"):
            self.set_running(False)
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
