"""Runs: earlier runs in the output folder, with their charts reloaded from metrics.jsonl."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidgetItem,
)

from app.job_model import JobModel
from app.tasks import run_task
from app.widgets.charts import LiveChart
from app.widgets.page import Page
from app.widgets.tables import list_table
from engine.config import ConfigError, JobSpec
from engine.train.metrics import METRICS_FILE, read_metrics

COLUMNS = ("Run", "Started", "Steps", "Train loss", "Val loss", "Adapter")
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
            model = JobSpec.load(folder / "job.toml").model.path
        except ConfigError:
            model = "?"
        checkpoint_step, total_steps = _checkpoint_facts(folder)
        runs.append(
            RunSummary(
                name=folder.name,
                path=str(folder),
                started=(folder / "job.toml").stat().st_mtime,
                steps=max((int(r.get("step", 0)) for r in rows), default=0),
                train_loss=train[-1]["train_loss"] if train else None,
                val_loss=val[-1]["val_loss"] if val else None,
                has_adapter=(folder / "adapter" / "adapters.safetensors").is_file(),
                model=model,
                checkpoint_step=checkpoint_step,
                total_steps=total_steps,
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
        top = QHBoxLayout()
        self.folder_label = QLabel()
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
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.chart)
        self.body.addWidget(split, 1)

    def refresh(self) -> None:
        out_dir = self.job.spec.run.out_dir
        self.folder_label.setText(f"Folder: {Path(out_dir).resolve()}")
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
            values = (
                run.name,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started)),
                f"{run.steps} of {run.total_steps}" if run.total_steps else str(run.steps),
                _fmt(run.train_loss),
                _fmt(run.val_loss),
                "yes" if run.has_adapter else "no",
            )
            for c, text in enumerate(values):
                self.table.setItem(r, c, QTableWidgetItem(text))
        if runs and not self.table.selectionModel().hasSelection():
            self.table.selectRow(0)
        run = self.current()  # the selection may have stayed on a row whose run changed
        self.open_button.setEnabled(run is not None and run.has_adapter)
        self._update_resume()

    def current(self) -> RunSummary | None:
        rows = self.table.selectionModel().selectedRows()
        return self.runs[rows[0].row()] if rows and rows[0].row() < len(self.runs) else None

    def _selected(self) -> None:
        run = self.current()
        self.open_button.setEnabled(run is not None and run.has_adapter)
        self._update_resume()
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
