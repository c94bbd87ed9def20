"""Runs: earlier runs in the output folder, with their charts reloaded from metrics.jsonl.

A run folder does not record how its run ended, so the status is read from what the run
left: its checkpoints, its adapter, and the error its log.txt ends with.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QPushButton,
    QSplitter,
    QTableWidgetItem,
)

from app.job_model import JobModel
from app.tasks import run_task
from app.widgets.charts import LiveChart
from app.widgets.page import Page, hint
from app.widgets.tables import list_table
from app.widgets.text import ElidedLabel, breakable_html, home_path
from engine.config import DEMO_DATASET, DEMO_MODEL, ConfigError, JobSpec
from engine.train.metrics import METRICS_FILE, read_metrics
from engine.train.run_dir import LOG_FILE

COLUMNS = ("Run", "Started", "Status", "Steps", "Train loss", "Val loss", "Adapter")
STATUS_COLORS = {"finished": "#2e7d32", "failed": "#c62828", "running": "#1565c0"}
FAILED_MARK = "run failed"  # the coordinator's log.exception line when a run dies
RESUME_HELP = "Continue this run from its last checkpoint, on the same curve"


@dataclass
class RunSummary:
    name: str
    path: str
    started: float
    steps: int
    train_loss: float | None
    val_loss: float | None
    has_adapter: bool
    model: str
    checkpoint_step: int | None = None  # the newest checkpoint's step
    total_steps: int | None = None  # what the run was set to reach
    title: str = ""  # what the table calls it: run.name, or dataset and model
    status: str = ""  # finished | stopped | failed | interrupted
    reason: str = ""  # why it failed, from its log
    folder: str = ""  # the run folder's own name

    @property
    def resumable(self) -> bool:
        """Stopped (or cut short) with a checkpoint to continue from."""
        return self.checkpoint_step is not None and (
            self.total_steps is None or self.checkpoint_step < self.total_steps
        )


def _checkpoint_facts(folder: Path) -> tuple[int | None, int | None]:
    """(step, total steps) of the newest checkpoint, from its meta.json alone."""
    from engine.train.checkpoint import META_FILE, list_checkpoints

    found = list_checkpoints(folder)
    if not found:
        return None, None
    try:
        meta = json.loads((found[0] / META_FILE).read_text())
    except (OSError, ValueError):
        return None, None
    step = int(found[0].name.rsplit("_", 1)[1])
    total = meta.get("total_steps")
    return step, int(total) if isinstance(total, int) else None


def short_name(path: str, demo: str, what: str) -> str:
    if path == demo:
        return f"demo {what}"
    return Path(path.rstrip("/")).stem or path


def run_title(job: JobSpec | None) -> str:
    """run.name when the user gave one, else 'dataset · model'."""
    if job is None:
        return ""
    if job.run.name:
        return job.run.name
    data = short_name(job.data.path, DEMO_DATASET, "dataset")
    return f"{data} · {short_name(job.model.path, DEMO_MODEL, 'model')}"


def failure_in_log(log_file: Path) -> str:
    """The exception line that follows the coordinator's 'run failed' in log.txt ('' if none)."""
    try:
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    marks = [i for i, line in enumerate(lines) if "ERROR" in line and FAILED_MARK in line]
    if not marks:
        return ""
    reason = ""
    for line in lines[marks[-1] + 1 :]:
        if line[:4].isdigit() and line[4:5] == "-":  # the next timestamped record
            break
        if line and not line.startswith((" ", "Traceback")):
            reason = line  # a traceback's last unindented line: "SomeError: what"
    return reason or "see log.txt"


def run_status(
    folder: Path, checkpoint_step: int | None, total: int | None, has_adapter: bool
) -> tuple[str, str]:
    """(status, reason) from what the run left behind."""
    reason = failure_in_log(folder / LOG_FILE)
    if reason:
        return "failed", reason
    if has_adapter and checkpoint_step is not None and checkpoint_step == total:
        return "finished", ""
    if has_adapter:
        return "stopped", ""
    return "interrupted", "it ended without a final state (the app or the engine was closed)"


def planned_steps(job: JobSpec | None) -> int | None:
    return job.run.steps if job is not None and not job.run.epochs else None


def scan_runs(out_dir: str) -> list[RunSummary]:
    """Every run folder under ``out_dir`` (worker thread: reads the disk)."""
    root = Path(out_dir)
    if not root.is_dir():
        return []
    runs = []
    for folder in root.iterdir():
        if not (folder / "job.toml").is_file():
            continue
        rows = read_metrics(folder / METRICS_FILE) if (folder / METRICS_FILE).is_file() else []
        train = [r for r in rows if r.get("kind", "train") == "train" and "train_loss" in r]
        val = [r for r in rows if "val_loss" in r]
        try:
            job: JobSpec | None = JobSpec.load(folder / "job.toml")
        except ConfigError:
            job = None
        model = job.model.path if job is not None else "?"
        checkpoint_step, total_steps = _checkpoint_facts(folder)
        total_steps = total_steps or planned_steps(job)
        has_adapter = (folder / "adapter" / "adapters.safetensors").is_file()
        status, reason = run_status(folder, checkpoint_step, total_steps, has_adapter)
        runs.append(
            RunSummary(
                name=folder.name,
                path=str(folder),
                started=(folder / "job.toml").stat().st_mtime,
                steps=max((int(r.get("step", 0)) for r in rows), default=0),
                train_loss=train[-1]["train_loss"] if train else None,
                val_loss=val[-1]["val_loss"] if val else None,
                has_adapter=has_adapter,
                model=model,
                checkpoint_step=checkpoint_step,
                total_steps=total_steps,
                title=run_title(job) or folder.name,
                status=status,
                reason=reason,
                folder=folder.name,
            )
        )
    return sorted(runs, key=lambda r: r.started, reverse=True)


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


class RunsPage(Page):
    title = "Runs"
    subtitle = "Earlier runs in the output folder. Select one to see its curves; open its adapter in Results."

    open_adapter = Signal(str, str)  # adapter dir, model
    resume_requested = Signal(str)  # run folder
    message = Signal(str, str)

    def __init__(self, job: JobModel):
        super().__init__(scroll=False)
        self.job = job
        self.runs: list[RunSummary] = []
        self.active_run = ""  # the folder of the run going now (its files say nothing yet)
        top = QHBoxLayout()
        self.folder_label = ElidedLabel()
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        self.open_button = QPushButton("Open adapter in Results")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self._open)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip(RESUME_HELP)
        self.resume_button.setEnabled(False)
        self.resume_button.clicked.connect(self._resume)
        self.busy = False  # a run is going: nothing can be resumed meanwhile
        top.addWidget(self.folder_label, 1)
        top.addWidget(refresh)
        top.addWidget(self.resume_button)
        top.addWidget(self.open_button)
        self.body.addLayout(top)
        self.table = list_table(COLUMNS, stretch_column=0)
        self.table.itemSelectionChanged.connect(self._selected)
        self.chart = LiveChart("Loss", "loss")
        self.chart.add_series("train", "#2e7d32")
        self.chart.add_series("validation", "#c62828", symbol="o")
        self.detail = hint()
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.chart)
        self.body.addWidget(split, 1)
        self.body.addWidget(self.detail)

    def refresh(self) -> None:
        out_dir = self.job.spec.run.out_dir
        self.folder_label.set_full_text(
            f"Folder: {home_path(str(Path(out_dir).expanduser().resolve()))}"
        )
        run_task(
            scan_runs,
            out_dir,
            owner=self,
            on_done=self._show,
            on_error=lambda m: self.message.emit(m, "error"),
        )

    def _show(self, runs: list[RunSummary]) -> None:
        self.runs = runs
        self.table.setRowCount(len(runs))
        for r, run in enumerate(runs):
            status = self.status_of(run)
            values = (
                run.title,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started)),
                status,
                f"{run.steps} of {run.total_steps}" if run.total_steps else str(run.steps),
                _fmt(run.train_loss),
                _fmt(run.val_loss),
                "yes" if run.has_adapter else "no",
            )
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                if c == 0:
                    item.setToolTip(run.path)
                if c == 2:
                    item.setForeground(QColor(STATUS_COLORS.get(status, "#5d4200")))
                    item.setToolTip(run.reason)
                self.table.setItem(r, c, item)
        if runs and not self.table.selectionModel().hasSelection():
            self.table.selectRow(0)
        run = self.current()  # the selection may have stayed on a row whose run changed
        self.open_button.setEnabled(run is not None and run.has_adapter)
        self._update_resume()
        self._describe(run)

    def current(self) -> RunSummary | None:
        rows = self.table.selectionModel().selectedRows()
        return self.runs[rows[0].row()] if rows and rows[0].row() < len(self.runs) else None

    def status_of(self, run: RunSummary) -> str:
        if self.active_run and Path(run.path) == Path(self.active_run):
            return "running"
        return run.status

    def _selected(self) -> None:
        run = self.current()
        self.open_button.setEnabled(run is not None and run.has_adapter)
        self._update_resume()
        self._describe(run)
        if run is not None:
            run_task(
                read_metrics,
                str(Path(run.path) / METRICS_FILE),
                owner=self,
                on_done=lambda rows: self._plot(run, rows),
                on_error=lambda m: self.message.emit(m, "warning"),
            )

    def _plot(self, run: RunSummary, rows: list[dict[str, Any]]) -> None:
        if run is not self.current():
            return
        self.chart.clear_all()
        for row in rows:
            if "train_loss" in row and row.get("kind", "train") == "train":
                self.chart.append("train", row["step"], row["train_loss"])
            if "val_loss" in row:
                self.chart.append("validation", row["step"], row["val_loss"])
        self.chart.redraw()

    def _describe(self, run: RunSummary | None) -> None:
        if run is None:
            self.detail.setText("")
            return
        status = self.status_of(run)
        text = (
            f"<b>{breakable_html(run.title)}</b> · folder {breakable_html(run.folder)} · {status}"
        )
        if run.reason and status != "running":
            text += f": <span style='color:#c62828'>{breakable_html(run.reason)}</span>"
        self.detail.setText(text)

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self._update_resume()

    def _update_resume(self) -> None:
        run = self.current()
        ok = run is not None and run.resumable and not self.busy
        self.resume_button.setEnabled(ok)
        if run is not None and run.checkpoint_step is not None and not run.resumable:
            self.resume_button.setToolTip("This run is finished")
        elif run is not None and run.checkpoint_step is None:
            self.resume_button.setToolTip("This run wrote no checkpoint to resume from")
        elif self.busy:
            self.resume_button.setToolTip("A run is going: stop it first")
        else:
            self.resume_button.setToolTip(RESUME_HELP)

    def _resume(self) -> None:
        run = self.current()
        if run is not None and run.resumable:
            self.resume_requested.emit(run.path)

    def _open(self) -> None:
        run = self.current()
        if run is not None:
            self.open_adapter.emit(str(Path(run.path) / "adapter"), run.model)
