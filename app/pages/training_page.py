"""Training: optimizer, schedule, batch, precision, sync mode, the runs folder; open/save the
job as TOML. Why Start refused a run shows here too, with a button per fix that fits, and
the plan for the chosen Macs (app/plan_preview.py) above it all: what Start would get."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QWidget,
)

from app.job_model import JobModel
from app.job_model import meta as meta_help
from app.plan_preview import PlanPreview
from app.plan_view import PlanView
from app.settings import AppSettings
from app.tasks import run_task
from app.widgets.controls import BoolControl, ChoiceControl, NumberControl
from app.widgets.page import Page, group, hint
from app.widgets.plan_panel import PlanPanel
from app.widgets.preflight_panel import PreflightPanel
from app.widgets.text import home_path
from engine.config import AUTO_MODE, JobSpec
from engine.optim.schedule import make_schedule
from engine.preflight import PreflightResult, Suggestion
from engine.train.trainer import total_steps_for

SYNC_EXPLAINED = {
    AUTO_MODE: "The planner measures the chosen Macs and their links and picks the mode, wire "
    "compression and accumulation it predicts fastest; the plan above says which and why.",
    "all-reduce": "Every worker gets the summed gradient and runs its own AdamW. Simple and robust.",
    "reduce-scatter": "ZeRO-1: each worker owns a shard of the optimizer state, then an all-gather "
    "shares the new weights. Less memory per worker.",
    "parameter-server": "One process keeps the master weights and optimizer; workers push "
    "gradients and pull weights. Good for uneven machines.",
    "ring": "Bandwidth-optimal ring: each worker only talks to its neighbours. Best for many workers.",
    "mlx": "MLX's own mx.distributed backend (ring or JACCL over Thunderbolt) where available.",
}
PREVIEW_POINTS = 200
AUTO_LABEL = "auto (recommended)"


class TrainingPage(Page):
    title = "Training"
    subtitle = "How the model learns: learning rate and schedule, batch, precision, and how workers combine gradients."

    job_loaded = Signal(str)  # path of an opened job file
    job_saved = Signal(str)
    message = Signal(str, str)  # text, level

    def __init__(self, job: JobModel, settings: AppSettings | None = None):
        super().__init__()
        self.job = job
        self.settings = settings
        self.train_records = 0  # from the Dataset page, to turn epochs into steps
        self._schedule_problem = ""  # the schedule's warning on the banner, if any
        self.preflight = PreflightPanel()
        self.preflight.apply_requested.connect(self.apply_suggestion)
        self.body.addWidget(self.preflight)
        self.plan_panel = PlanPanel()
        self.plan_panel.leave_out.connect(self.leave_out)
        self.plan_panel.one_process.connect(lambda: self.job.set("dist", "workers", 1))
        self.body.addWidget(self.plan_panel)
        self.plan_preview: PlanPreview | None = None

        files = QHBoxLayout()
        self.open_button = QPushButton("Open job…")
        self.save_button = QPushButton("Save job…")
        self.open_button.setToolTip(
            "Load every setting from a job TOML file (orchard train job.toml)"
        )
        self.save_button.setToolTip("Write every setting to a job TOML file for `orchard train`")
        self.open_button.clicked.connect(self._ask_open)
        self.save_button.clicked.connect(self._ask_save)
        files.addWidget(self.open_button)
        files.addWidget(self.save_button)
        files.addStretch(1)
        self.body.addLayout(files)

        box, form = group("Optimizer")
        self.lr = NumberControl(
            job, "optim", "learning_rate", slider_range=(1e-6, 1e-1), log_scale=True
        )
        form.addRow("Learning rate", self.lr)
        self.schedule = ChoiceControl(job, "optim", "schedule")
        form.addRow("Schedule", self.schedule)
        form.addRow(
            "Warmup steps", NumberControl(job, "optim", "warmup_steps", slider_range=(0, 1000))
        )
        form.addRow("Final LR share", NumberControl(job, "optim", "min_lr_ratio", decimals=2))
        self.plot = pg.PlotWidget()
        self.plot.setFixedHeight(130)
        self.plot.setLabel("bottom", "step")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setMouseEnabled(False, False)
        self.curve = self.plot.plot([], [], pen=pg.mkPen("#2e7d32", width=2))
        form.addRow("Preview", self.plot)
        form.addRow(
            "Weight decay",
            NumberControl(job, "optim", "weight_decay", slider_range=(0, 0.5), decimals=4),
        )
        form.addRow(
            "Beta 1", NumberControl(job, "optim", "beta1", slider_range=(0.5, 0.999), decimals=4)
        )
        form.addRow(
            "Beta 2", NumberControl(job, "optim", "beta2", slider_range=(0.9, 0.9999), decimals=5)
        )
        form.addRow(
            "Gradient clip",
            NumberControl(job, "optim", "grad_clip", slider_range=(0, 10), decimals=2),
        )
        form.addRow("", BoolControl(job, "optim", "decay_norms_and_biases"))
        self.body.addWidget(box)

        box, form = group("Batch and length")
        form.addRow("Batch size", NumberControl(job, "run", "batch_size", slider_range=(1, 128)))
        form.addRow(
            "Grad accumulation", NumberControl(job, "run", "grad_accum", slider_range=(1, 64))
        )
        length = QWidget()
        row = QHBoxLayout(length)
        row.setContentsMargins(0, 0, 0, 0)
        self.by_steps = QRadioButton("Steps")
        self.by_epochs = QRadioButton("Epochs")
        self._length_mode = QButtonGroup(self)
        self._length_mode.addButton(self.by_steps)
        self._length_mode.addButton(self.by_epochs)
        self.steps = NumberControl(job, "run", "steps", slider=False)
        self.epochs = NumberControl(job, "run", "epochs", slider=False, decimals=2)
        for w in (self.by_steps, self.steps, self.by_epochs, self.epochs):
            row.addWidget(w)
        row.addStretch(1)
        self.by_epochs.toggled.connect(self._set_length_mode)
        form.addRow("Train for", length)
        form.addRow("Precision", ChoiceControl(job, "run", "precision"))
        form.addRow("Validate every", NumberControl(job, "run", "val_every", slider=False))
        form.addRow("Checkpoint every", NumberControl(job, "run", "checkpoint_every", slider=False))
        form.addRow("Seed", NumberControl(job, "run", "seed", slider=False))
        self.body.addWidget(box)

        box, form = group("Distributed")
        self.mode = ChoiceControl(job, "dist", "mode", {AUTO_MODE: AUTO_LABEL})
        self.mode_hint = hint()
        form.addRow("Sync mode", self.mode)
        form.addRow("", self.mode_hint)
        form.addRow("Wire compression", ChoiceControl(job, "dist", "compression"))
        form.addRow("Local workers", NumberControl(job, "dist", "workers", slider_range=(1, 8)))
        form.addRow("Worker priority drop", NumberControl(job, "dist", "worker_niceness"))
        form.addRow(
            "Bucket (MiB)", NumberControl(job, "dist", "bucket_mb", slider=False, decimals=2)
        )
        self.body.addWidget(box)

        box, form = group("Runs")
        folder = QWidget()
        row = QHBoxLayout(folder)
        row.setContentsMargins(0, 0, 0, 0)
        self.runs_folder = QLineEdit()
        self.runs_folder.setToolTip(meta_help("run", "out_dir")["help"])
        self.runs_folder.editingFinished.connect(
            lambda: self.set_runs_folder(self.runs_folder.text())
        )
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_runs_folder)
        row.addWidget(self.runs_folder, 1)
        row.addWidget(browse)
        form.addRow("Runs folder", folder)
        form.addRow(
            "", hint("Each run gets a folder here: its job, metrics, checkpoints and adapter.")
        )
        self.body.addWidget(box)
        self.body.addStretch(1)

        job.changed.connect(self._on_change)
        job.reset.connect(self._adopt_runs_folder)
        job.reset.connect(self.refresh)
        self._adopt_runs_folder(initial=True)
        self.refresh()

    def refresh(self) -> None:
        by_epochs = self.job.spec.run.epochs > 0
        self.by_epochs.setChecked(by_epochs)
        self.by_steps.setChecked(not by_epochs)
        self.steps.setEnabled(not by_epochs)
        self.epochs.setEnabled(by_epochs)
        self._explain_mode()
        self._draw_schedule()

    def _on_change(self, section: str, name: str) -> None:
        if (section, name) == ("run", "out_dir"):
            self._show_runs_folder()
        if section in ("optim", "run", "dist"):
            self.refresh()

    # the plan before Start ---------------------------------------------------------------------
    def attach_plan(self, preview: PlanPreview) -> None:
        """Show ``preview``'s plans here; it starts measuring when this page is first shown."""
        self.plan_preview = preview
        preview.planned.connect(self.show_plan)
        preview.busy.connect(self.plan_panel.set_busy)
        self.plan_panel.remeasure.connect(preview.remeasure)
        if preview.view is not None:
            self.show_plan(preview.view)
        if self.isVisible():
            preview.activate()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if self.plan_preview is not None:
            self.plan_preview.activate()

    def show_plan(self, view: PlanView) -> None:
        self.plan_panel.show_view(view)
        self._explain_mode()

    def leave_out(self, address: str) -> None:
        """Untick a Mac from the run's workers (the Cluster page shows it unticked)."""
        self.job.set("dist", "hosts", [h for h in self.job.spec.dist.hosts if h != address])

    def _explain_mode(self) -> None:
        """The mode's hint; for auto, the concrete pick once planned (also in the choice)."""
        mode = self.job.spec.dist.mode
        view = self.plan_preview.view if self.plan_preview is not None else None
        plan = view.plan if view is not None else None
        pick = ""
        if plan is not None and len(plan.macs) > 1:
            c = plan.best.choice
            codec = "" if c.compression == "none" else f", {c.compression} on the wire"
            pick = f"{c.mode}{codec}, grad_accum {c.grad_accum}"
        index = self.mode.findData(AUTO_MODE)
        self.mode.setItemText(index, f"{AUTO_LABEL}: {pick}" if pick else AUTO_LABEL)
        text = SYNC_EXPLAINED.get(mode, "")
        if mode == AUTO_MODE and pick:
            text += f" Planned now: {pick}."
        elif mode == AUTO_MODE and plan is not None:
            text += " Planned now: one worker, nothing to synchronise."
        self.mode_hint.setText(text)

    # the runs folder: the app's own (remembered); a job file may name another full path ----
    def _adopt_runs_folder(self, initial: bool = False) -> None:
        """At launch, the remembered folder; for an opened job, its own folder when that is a
        full path, else the remembered one (a relative folder depends on where the app ran)."""
        out = self.job.spec.run.out_dir
        if initial or not os.path.isabs(os.path.expanduser(out)):
            default = os.path.expanduser(JobSpec().run.out_dir)
            remembered = self.settings.runs_folder() if self.settings else default
            self.job.set("run", "out_dir", remembered)
        self._show_runs_folder()

    def _show_runs_folder(self) -> None:
        """The folder as its owner reads it (~/Orchard/runs); typed back, ~ is expanded."""
        self.runs_folder.setText(home_path(self.job.spec.run.out_dir))

    def _browse_runs_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(
            self, "Choose the folder for runs", self.job.spec.run.out_dir
        )
        if path:
            self.set_runs_folder(path)

    def set_runs_folder(self, text: str) -> bool:
        """Use ``text`` as the runs folder when it is a full path; else say why not."""
        path = os.path.expanduser(text.strip())
        if not os.path.isabs(path):
            self.message.emit(
                f"Runs folder: expected a full path such as {JobSpec().run.out_dir}; "
                f"{text.strip()!r} would depend on the folder the app was started from.",
                "warning",
            )
            self._show_runs_folder()
            return False
        path = os.path.normpath(path)
        if self.settings is not None:
            self.settings.set_runs_folder(path)
        self.job.set("run", "out_dir", path)
        self._show_runs_folder()
        return True

    # Start's refusals (engine/preflight.py) ---------------------------------------------------
    def show_refusal(self, result: PreflightResult, can_apply: bool = True) -> None:
        self.preflight.show_result(result, can_apply)
        if self.scroll_area is not None:  # the panel is at the top: a page scrolled down
            self.scroll_area.verticalScrollBar().setValue(0)  # would hide why Start refused

    def clear_refusal(self) -> None:
        self.preflight.hide()

    def apply_suggestion(self, suggestion: Suggestion) -> None:
        """Set each override through the job model, so every control shows its new value."""
        for key, value in suggestion.overrides.items():
            section, name = key.split(".", 1)
            self.job.set(section, name, value)
        self.preflight.show_applied(suggestion)

    def _set_length_mode(self, by_epochs: bool) -> None:
        if by_epochs and self.job.spec.run.epochs == 0:
            self.job.set("run", "epochs", 1.0)
        elif not by_epochs:
            self.job.set("run", "epochs", 0.0)
        self.refresh()

    def set_dataset_size(self, train_records: int) -> None:
        self.train_records = train_records
        self._draw_schedule()

    def _draw_schedule(self) -> None:
        spec = self.job.spec
        total = total_steps_for(spec, self.train_records) if self.train_records else spec.run.steps
        try:
            lr_at = make_schedule(self.job.spec.optim, total)
            xs = np.unique(np.linspace(0, total - 1, min(total, PREVIEW_POINTS)).astype(int))
            self.curve.setData(xs, [lr_at(int(s)) for s in xs])
        except ValueError as e:
            self._schedule_problem = str(e)
            self.message.emit(self._schedule_problem, "warning")
            return
        if self._schedule_problem and self.banner.text() == self._schedule_problem:
            self.clear_message()  # the schedule draws again: its warning is over
        self._schedule_problem = ""

    # TOML in and out, on a worker thread (disk) -------------------------------------------
    def _ask_open(self) -> None:
        folder = self.settings.last_folder("jobs") if self.settings else ""
        path, _ = QFileDialog.getOpenFileName(self, "Open job", folder, "Job files (*.toml)")
        if path:
            self._remember(path)
            self.open_job(path)

    def _ask_save(self) -> None:
        folder = self.settings.last_folder("jobs") if self.settings else ""
        start = str(Path(folder) / "job.toml") if folder else "job.toml"
        path, _ = QFileDialog.getSaveFileName(self, "Save job", start, "Job files (*.toml)")
        if path:
            self._remember(path)
            self.save_job(path)

    def _remember(self, path: str) -> None:
        if self.settings is not None:
            self.settings.remember_folder("jobs", str(Path(path).parent))

    def open_job(self, path: str) -> None:
        def loaded(spec: JobSpec) -> None:
            self.clear_message("error")
            self.job.replace(spec)
            self.job_loaded.emit(path)
            self.message.emit(f"Opened {path}", "info")

        run_task(
            JobSpec.load,
            path,
            owner=self,
            on_done=loaded,
            on_error=lambda m: self.message.emit(m, "error"),
        )

    def save_job(self, path: str) -> None:
        spec = copy.deepcopy(self.job.spec)  # a copy: later edits don't race the write
        run_task(
            spec.save,
            path,
            owner=self,
            on_done=lambda _: (
                self.job_saved.emit(path),
                self.message.emit(f"Saved {path}", "info"),
            ),
            on_error=lambda m: self.message.emit(m, "error"),
        )
