"""Dataset: drop or open a file/folder, see its format, records as the model sees them,
token statistics, and every problem with its file and line."""

from __future__ import annotations

import copy
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QTableWidgetItem,
    QTabWidget,
    QWidget,
)

from app.dataset_view import DatasetView, load_dataset_view, read_source_lines
from app.job_model import JobModel
from app.settings import AppSettings
from app.tasks import run_task
from app.widgets.controls import BoolControl, ChoiceControl, NumberControl
from app.widgets.page import Page, group, hint
from app.widgets.record_view import RecordView
from app.widgets.tables import list_table
from app.widgets.text import ElidedLabel, breakable_html, wrapping_label
from engine.config import DEMO_DATASET
from engine.data.problems import Problem

PROBLEM_COLUMNS = ("Level", "File", "Line", "Column", "Field", "Message")
DATASET_FILTER = "Datasets (*.jsonl *.json *.txt)"
STATS = (
    ("format", "Format"),
    ("records", "Records"),
    ("tokens", "Tokens"),
    ("lengths", "Lengths"),
    ("truncated", "Truncated"),
    ("skipped", "Skipped"),
    ("duplicates", "Duplicates"),
)
RELOAD_ON = {
    ("data", "path"),
    ("data", "format"),
    ("data", "max_seq_len"),
    ("data", "mask_prompt"),
    ("data", "valid_path"),
    ("data", "valid_fraction"),
    ("model", "path"),
}


class DatasetPage(Page):
    title = "Dataset"
    subtitle = (
        "Drop a .jsonl, .json or .txt file (or a folder with train/valid files) anywhere on this "
        "window. Problems are listed with their line before anything starts."
    )

    loaded = Signal(object)  # DatasetView
    stats_ready = Signal(int)  # training records, for step counts by epoch
    message = Signal(str, str)

    def __init__(self, job: JobModel, settings: AppSettings):
        super().__init__()
        self.job, self.settings = job, settings
        self.view: DatasetView | None = None
        self.train_count = 0
        self._generation = 0  # drops results of loads the user has since replaced

        self.problems: list[Problem] = []  # the rows of the Problems table
        top = QHBoxLayout()
        self.path_label = ElidedLabel()  # a long path must not widen the page (full path: tooltip)
        self.path_label.setStyleSheet("font-size: 12pt; font-weight: 600;")
        open_file = QPushButton("Open file…")
        open_folder = QPushButton("Open folder…")
        demo = QPushButton("Use demo dataset")
        open_file.clicked.connect(self.ask_file)
        open_folder.clicked.connect(self.ask_folder)
        demo.clicked.connect(lambda: self.open_path(DEMO_DATASET))
        top.addWidget(self.path_label, 1)
        for b in (open_file, open_folder, demo):
            top.addWidget(b)
        self.body.addLayout(top)
        self.status = hint()
        self.body.addWidget(self.status)

        settings_box, form = group("Settings")
        form.addRow("Format", ChoiceControl(self.job, "data", "format"))
        form.addRow(
            "Validation share", NumberControl(self.job, "data", "valid_fraction", decimals=2)
        )
        form.addRow(
            "Max length (tokens)",
            NumberControl(self.job, "data", "max_seq_len", slider_range=(64, 8192)),
        )
        form.addRow(
            "",
            BoolControl(
                self.job, "data", "mask_prompt", "Train on responses only (prompts masked)"
            ),
        )
        form.addRow("", BoolControl(self.job, "data", "packing"))
        stats_box = QWidget()
        stats_layout = QGridLayout(stats_box)
        stats_layout.setContentsMargins(0, 0, 0, 0)
        self.stat_labels: dict[str, QLabel] = {}
        for i, (key, title) in enumerate(STATS):
            name = QLabel(title)
            name.setStyleSheet("color:#666;")
            value = wrapping_label("–")
            value.setStyleSheet("font-weight:600;")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            stats_layout.addWidget(name, i // 2, (i % 2) * 2)
            stats_layout.addWidget(value, i // 2, (i % 2) * 2 + 1)
            self.stat_labels[key] = value
        stats_layout.setColumnStretch(1, 1)
        stats_layout.setColumnStretch(3, 1)
        self.histogram = pg.PlotWidget()
        self.histogram.setTitle(
            "Token lengths (train); red bars are cut at the max length", size="9pt"
        )
        self.histogram.setLabel("bottom", "tokens")
        self.histogram.setLabel("left", "records")
        self.histogram.setMouseEnabled(False, False)
        self.histogram.setFixedHeight(170)
        self.limit_line = pg.InfiniteLine(
            angle=90, pen=pg.mkPen("#c62828", width=1, style=Qt.PenStyle.DashLine)
        )
        self.histogram.addItem(self.limit_line)
        self.bars: pg.BarGraphItem | None = None
        stats_layout.addWidget(self.histogram, (len(STATS) + 1) // 2, 0, 1, 4)
        stats_group, stats_form = group("Statistics")
        stats_form.addRow(stats_box)
        settings_box.setMaximumWidth(460)
        upper = QHBoxLayout()
        upper.addWidget(settings_box, 2, Qt.AlignmentFlag.AlignTop)
        upper.addWidget(stats_group, 3)
        self.body.addLayout(upper)

        self.tabs = QTabWidget()
        preview = QSplitter(Qt.Orientation.Horizontal)
        self.record_list = QListWidget()
        self.record_list.currentRowChanged.connect(self._show_record)
        self.record_view = RecordView()
        preview.addWidget(self.record_list)
        preview.addWidget(self.record_view)
        preview.setSizes([240, 700])
        problems = QSplitter(Qt.Orientation.Vertical)
        self.problem_table = list_table(PROBLEM_COLUMNS, stretch_column=5)
        self.problem_table.itemSelectionChanged.connect(self._show_problem)
        self.problem_source = RecordView()
        problems.addWidget(self.problem_table)
        problems.addWidget(self.problem_source)
        self.tabs.addTab(preview, "Preview")
        self.tabs.addTab(problems, "Problems")
        self.tabs.setMinimumHeight(340)
        self.body.addWidget(self.tabs, 1)

        self.job.changed.connect(self._on_change)
        self.job.reset.connect(self.reload)
        self.reload()

    # choosing a dataset ------------------------------------------------------------------------
    def ask_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open dataset", self.settings.last_folder("datasets"), DATASET_FILTER
        )
        if path:
            self.settings.remember_folder("datasets", str(Path(path).parent))
            self.open_path(path)

    def ask_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(
            self,
            "Open a dataset folder (train/valid/test files)",
            self.settings.last_folder("datasets"),
        )
        if path:
            self.settings.remember_folder("datasets", str(Path(path).parent))
            self.open_path(path)

    def open_path(self, path: str) -> None:
        if self.job.spec.data.path == path:
            self.reload()
        else:
            self.job.set("data", "path", path)  # reloads through _on_change

    def _on_change(self, section: str, name: str) -> None:
        if (section, name) in RELOAD_ON:
            self.reload()

    def reload(self) -> None:
        """Read, check and tokenize in the background; results land in ``_loaded``."""
        self._generation += 1
        generation = self._generation
        spec = copy.deepcopy(self.job.spec)
        shown = (
            "Demo dataset (Orchard robot Q&A)" if spec.data.path == DEMO_DATASET else spec.data.path
        )
        self.path_label.set_full_text(shown)
        self.status.setText("Reading and tokenizing…")
        run_task(
            load_dataset_view,
            spec,
            owner=self,
            on_done=lambda v: self._loaded(generation, v),
            on_error=lambda m: self._failed(generation, m),
        )

    def _failed(self, generation: int, message: str) -> None:
        if generation == self._generation:
            self.status.setText(f"<span style='color:#c62828'>{breakable_html(message)}</span>")
            self.message.emit(message, "error")

    # showing it ----------------------------------------------------------------------------------
    def _loaded(self, generation: int, view: DatasetView) -> None:
        if generation != self._generation:
            return
        self.view = view
        self.clear_message("error")  # an earlier read's failure is over
        if view.path != DEMO_DATASET:
            self.settings.add_recent("datasets", view.path)
        s = view.stats
        self.train_count = s.records.get("train", 0) if s else len(view.read.records)
        errors = view.read.problems.errors
        warnings = view.read.problems.warnings + view.duplicate_count
        self.stat_labels["format"].setText(view.read.format or "unknown")
        if s is not None:
            records = ", ".join(f"{k} {v:,}" for k, v in s.records.items())
            if view.split is not None:
                records += f" → {view.split[0]:,} train / {view.split[1]:,} validation"
            self.stat_labels["records"].setText(records)
            self.stat_labels["tokens"].setText(
                ", ".join(
                    f"{k} {v:,} ({s.trained_tokens.get(k, 0):,} trained)"
                    for k, v in s.tokens.items()
                )
            )
            pct = s.truncated / max(1, sum(s.records.values()))
            self.stat_labels["truncated"].setText(
                f"{s.truncated:,} ({pct:.0%}) cut at {view.max_seq_len} tokens"
            )
            skipped = f"{s.no_target:,} with no trained token left"
            if errors:
                skipped += "; records with errors are not used"
            self.stat_labels["skipped"].setText(skipped)
            self.stat_labels["lengths"].setText(f"mean {s.mean_len:.0f}, max {s.max_len:,} tokens")
            self.stat_labels["duplicates"].setText(
                f"{s.duplicates:,} exact{' (see Problems)' if s.duplicates else ''}; "
                f"{s.overlap:,} validation record(s) also in train"
            )
            self._draw_histogram(s.histogram.edges, s.histogram.counts, view.max_seq_len)
        else:
            for key, _title in STATS[1:]:
                self.stat_labels[key].setText("–")
            self.stat_labels["records"].setText(f"{len(view.read.records):,} read")
            self._draw_histogram([0, 1], [0], view.max_seq_len)
        self._fill_problems(view)
        self._fill_records(view)
        if errors:
            self.status.setText(
                f"<span style='color:#c62828'><b>{errors} problem(s) to fix</b></span>"
                f"{f' and {warnings} warning(s)' if warnings else ''}: see the Problems tab."
            )
            self.tabs.setCurrentIndex(1)
        else:
            self.status.setText(
                f"Ready to train{f' ({warnings} warning(s) in the Problems tab)' if warnings else ''}."
                + (f" {view.note}" if view.note else "")
            )
            self.tabs.setCurrentIndex(0)
        self.loaded.emit(view)
        self.stats_ready.emit(self.train_count)

    def _draw_histogram(self, edges: list[int], counts: list[int], limit: int) -> None:
        if self.bars is not None:
            self.histogram.removeItem(self.bars)
        view = self.histogram.getPlotItem()
        if not any(counts):  # nothing to draw: an honest 0..1 axis, not pyqtgraph's -100..100
            self.bars = None
            view.setXRange(0, max(limit, 1), padding=0.02)
            view.setYRange(0, 1, padding=0)
            self.limit_line.setValue(limit)
            self.limit_line.setVisible(True)
            return
        view.enableAutoRange()
        width = (edges[1] - edges[0]) if len(edges) > 1 else 1
        brushes = ["#c62828" if e + width > limit else "#2e7d32" for e in edges[:-1]]
        self.bars = pg.BarGraphItem(
            x0=edges[:-1], width=width * 0.9, height=counts, brushes=brushes, pen=None
        )
        self.histogram.addItem(self.bars)
        self.limit_line.setValue(limit)
        self.limit_line.setVisible(limit <= (edges[-1] if edges else 0) * 1.5)

    def _fill_problems(self, view: DatasetView) -> None:
        log = view.read.problems
        kept = self.problems = list(log.kept) + view.duplicates
        self.problem_table.setRowCount(len(kept))
        for r, p in enumerate(kept):
            values = (
                p.level,
                Path(p.file).name,
                "" if p.line is None else str(p.line),
                "" if p.column is None else str(p.column),
                p.field or "",
                p.message,
            )
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                if c == 1:
                    item.setToolTip(p.file)
                if c == 0:
                    item.setForeground(
                        Qt.GlobalColor.red if p.is_error else Qt.GlobalColor.darkYellow
                    )
                self.problem_table.setItem(r, c, item)
        total = log.total + view.duplicate_count
        more = total - len(kept)
        title = f"Problems ({total})" if total else "Problems"
        self.tabs.setTabText(1, title)
        if more > 0:
            self.problem_source.setPlainText(
                f"… and {more} more not listed (first {len(kept)} shown)."
            )
        else:
            self.problem_source.clear()

    def _fill_records(self, view: DatasetView) -> None:
        self.record_list.blockSignals(True)
        self.record_list.clear()
        for p in view.previews:
            item = QListWidgetItem(p.title)
            item.setToolTip(f"{p.file}:{p.line}")
            self.record_list.addItem(item)
        self.record_list.blockSignals(False)
        if view.previews:
            self.record_list.setCurrentRow(0)
        else:
            self.record_view.setPlainText(
                "No record to preview."
                if not view.read.records
                else view.note or "Choose a model to see records as it tokenizes them."
            )

    def _show_record(self, row: int) -> None:
        if self.view is None or not 0 <= row < len(self.view.previews):
            return
        p = self.view.previews[row]
        self.record_view.show_segments(f"{Path(p.file).name}, line {p.line}", p.segments, p.note)

    def _show_problem(self) -> None:
        rows = self.problem_table.selectionModel().selectedRows()
        if self.view is None or not rows:
            return
        if rows[0].row() >= len(self.problems):
            return
        p = self.problems[rows[0].row()]
        preview = next(
            (x for x in self.view.previews if x.file == p.file and x.line == p.line), None
        )
        if preview is not None:
            self.problem_source.show_segments(
                f"{Path(p.file).name}, line {p.line}", preview.segments, str(p)
            )
        elif p.line is None:
            self.problem_source.setPlainText(str(p))
        else:
            run_task(
                read_source_lines,
                p.file,
                p.line,
                owner=self,
                on_done=lambda lines: self.problem_source.show_source(str(p), lines, p.line),
                on_error=lambda m: self.problem_source.setPlainText(
                    f"{p}\n\n(cannot show the file: {m})"
                ),
            )
