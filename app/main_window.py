"""The one main window: sidebar steps, the pages, a status bar with the cluster summary."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QByteArray, Qt, QTimer
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QKeySequence,
    QPixmap,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.bridge import EngineBridge, RunAttached
from app.close_question import CANCEL, STOP, ask_close_during_run
from app.cluster_model import ClusterModel
from app.discovery_feed import DiscoveryFeed
from app.gc_pauses import freeze_loaded_objects
from app.job_model import JobModel
from app.pages.cluster_page import ClusterPage
from app.pages.dataset_page import DatasetPage
from app.pages.model_page import ModelPage
from app.pages.monitor_page import MonitorPage
from app.pages.results_page import ResultsPage
from app.pages.runs_page import RunsPage
from app.pages.training_page import TrainingPage
from app.run_controller import RunController
from app.settings import AppSettings
from app.tasks import describe_error, run_task
from app.widgets.banner import Banner
from app.widgets.page import Page
from app.widgets.text import home_path
from app.widgets.transfer_panel import TransferPanel
from app.widgets.welcome import WelcomeCard
from engine.config import ConfigError, JobSpec
from engine.events import StateEvent
from engine.preflight import PreflightResult, preflight
from engine.train.metrics import METRICS_FILE, read_metrics
from engine.train.trainer import total_steps_for

log = logging.getLogger(__name__)
ICON = Path(__file__).resolve().parent.parent / "resources" / "icons" / "orchard-512.png"

STEPS = ("Cluster", "Dataset", "Model & LoRA", "Training", "Monitor", "Results", "Runs")
WELCOME_DONE = "welcome/done"  # settings key: the first-run welcome was dismissed or used
ENDED = ("finished", "failed", "stopped")
SIDEBAR_STYLE = """
QWidget#side { background: #f4f6f3; }
QListWidget#sidebar { background: #f4f6f3; border: none; font-size: 11pt; padding-top: 8px; outline: 0; }
QListWidget#sidebar::item { padding: 9px 14px; border-radius: 6px; margin: 1px 8px; color: #333; }
QListWidget#sidebar::item:selected { background: #2e7d32; color: white; }
QPushButton#primary { background: #2e7d32; color: white; font-weight: 600; padding: 7px 16px;
                      border-radius: 6px; border: none; }
QPushButton#primary:disabled { background: #a5d6a7; }
"""


def brand_label() -> QWidget:
    """The app icon and name at the top of the sidebar."""
    brand = QWidget()
    row = QHBoxLayout(brand)
    row.setContentsMargins(16, 14, 16, 6)
    icon = QLabel()
    if ICON.is_file():
        icon.setPixmap(
            QPixmap(str(ICON)).scaled(
                30,
                30,
                Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
        )
    name = QLabel("Orchard")
    name.setStyleSheet("font-size: 16pt; font-weight: 700; color:#1b5e20;")
    row.addWidget(icon)
    row.addWidget(name, 1)
    return brand


def adapter_files(adapter_dir: str) -> list[str]:
    folder = Path(adapter_dir)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def restore_job(settings: AppSettings) -> JobSpec | None:
    """The job the user had open last time, when it still validates; else the defaults."""
    text = settings.value("job/last")
    if not isinstance(text, str) or not text:
        return None
    try:
        return JobSpec.from_toml(text, source="last session")
    except ConfigError as e:
        log.info("not restoring the last job: %s", e)
        return None


class MainWindow(QMainWindow):
    def __init__(self, settings: AppSettings | None = None, discover: bool = True):
        super().__init__()
        self.setWindowTitle("Orchard")
        self.settings = settings or AppSettings()
        self.job = JobModel(restore_job(self.settings), parent=self)
        self.bridge = EngineBridge(self)
        self.cluster = ClusterModel(self)
        self.runner = RunController(self.bridge, self)
        self._checking = False  # a preflight is running: Start waits for its verdict

        self.cluster_page = ClusterPage(self.job, self.cluster)
        self.dataset_page = DatasetPage(self.job, self.settings)
        self.model_page = ModelPage(self.job, self.cluster, self.settings)
        self.training_page = TrainingPage(self.job, self.settings)
        self.training_page.attach_plan(self.cluster_page.plan)  # one plan, shown on both pages
        self.monitor_page = MonitorPage()
        self.results_page = ResultsPage()
        self.runs_page = RunsPage(self.job)
        self.pages = [
            self.cluster_page,
            self.dataset_page,
            self.model_page,
            self.training_page,
            self.monitor_page,
            self.results_page,
            self.runs_page,
        ]

        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setFixedWidth(190)
        self.sidebar.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        for i, name in enumerate(STEPS):
            label = f"{i + 1}  {name}" if i < 6 else f"    {name}"
            self.sidebar.addItem(QListWidgetItem(label))
        self.stack = QStackedWidget()
        for page in self.pages:
            self.stack.addWidget(page)
        self.sidebar.currentRowChanged.connect(self._show_page)
        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("primary")
        self.start_button.setToolTip("Run the job as configured (Ctrl+R)")
        self.start_button.clicked.connect(self.start_run)

        side = QWidget()
        side.setObjectName("side")
        side.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 12)
        side_layout.addWidget(brand_label())
        side_layout.addWidget(self.sidebar, 1)
        side_layout.addWidget(self.start_button, 0, Qt.AlignmentFlag.AlignHCenter)

        content = QWidget()
        content_layout = QVBoxLayout(content)
        content_layout.setContentsMargins(8, 8, 8, 0)
        content_layout.addWidget(self.stack, 1)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(side)
        layout.addWidget(content, 1)
        self.setCentralWidget(central)
        self.setStyleSheet(SIDEBAR_STYLE)
        self.cluster_label = QLabel()
        self.run_label = QLabel("Ready")
        self.transfer_panel = TransferPanel()
        self.statusBar().addWidget(self.cluster_label, 1)
        self.statusBar().addPermanentWidget(self.run_label)
        self.setAcceptDrops(True)
        self._menus()
        self._wire()
        self.welcome: WelcomeCard | None = None
        if not self.settings.value(WELCOME_DONE):
            self._show_welcome()
        self.cluster_page.set_discovery(discover)
        self.resize(1200, 820)
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        self.sidebar.setCurrentRow(0)
        self._update_summary()
        # Import the engine client (gRPC) now, off the GUI thread, so pressing Start later does
        # not make the window wait on the import lock; then keep what is loaded out of the GC.
        run_task(
            importlib.import_module,
            "engine.service.launcher",
            on_done=lambda _m: freeze_loaded_objects(),
        )
        self.runner.attach()  # a run going on in the engine process shows on the Monitor
        self.discovery = DiscoveryFeed(self.bridge.sink, self) if discover else None
        if self.discovery is not None:
            self.discovery.failed.connect(lambda m: self.show_message(m, "warning"))
            self.discovery.start()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if not getattr(self, "_monitor_laid_out", False):
            self._monitor_laid_out = True
            QTimer.singleShot(0, self, self._lay_out_monitor)  # not after the window is gone

    def _lay_out_monitor(self) -> None:
        """Give the hidden Monitor page its size and draw it once, now that the window has its
        own: a page is laid out when first shown, and for the Monitor (six charts) that
        doubled the freeze of the first Start, which switches to it (55-70 ms of the GUI
        thread's CPU instead of 33-36, measured on 2 busy cores)."""
        shown = self.stack.currentWidget()
        if shown is not self.monitor_page and shown is not None:
            self.monitor_page.setGeometry(shown.geometry())
            self.monitor_page.grab()  # sends its pending resize events and paints it off screen

    # wiring -----------------------------------------------------------------------------------
    def _menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        for text, key, slot in (  # from any page: the dataset opens where its problems show
            ("Open dataset…", QKeySequence.StandardKey.Open,
             lambda: self._on_dataset_page(self.dataset_page.ask_file)),
            ("Open dataset folder…", None,
             lambda: self._on_dataset_page(self.dataset_page.ask_folder)),
        ):  # fmt: skip
            action = QAction(text, self)
            if key is not None:
                action.setShortcut(key)
            action.triggered.connect(slot)
            file_menu.addAction(action)
        self.recent_menu = file_menu.addMenu("Recent datasets")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self._fill_recent()
        file_menu.addSeparator()
        for text, key, slot in (
            ("Open job…", None, self.training_page._ask_open),
            ("Save job…", QKeySequence.StandardKey.Save, self.training_page._ask_save),
        ):
            action = QAction(text, self)
            if key is not None:
                action.setShortcut(key)
            action.triggered.connect(slot)
            file_menu.addAction(action)
        file_menu.addSeparator()
        quit_action = QAction("Quit", self, shortcut="Ctrl+Q")  # Cmd+Q on macOS
        quit_action.setMenuRole(QAction.MenuRole.QuitRole)  # the app menu's Quit on macOS
        quit_action.triggered.connect(self.close)  # a run going on: the close question
        file_menu.addAction(quit_action)
        run_menu = self.menuBar().addMenu("&Run")
        start = QAction("Start training", self, shortcut="Ctrl+R", triggered=self.start_run)
        stop = QAction("Stop", self, shortcut="Ctrl+.", triggered=self.runner.stop)
        run_menu.addActions([start, stop])

    def _fill_recent(self) -> None:
        """File > Recent datasets, from the list the Dataset page keeps in the settings."""
        self.recent_menu.clear()
        recent = self.settings.recent("datasets")
        for path in recent:
            action = self.recent_menu.addAction(Path(path).name or path)
            action.setToolTip(path)
            action.setStatusTip(path)
            action.triggered.connect(lambda _=False, p=path: self.open_dataset(p))
        if not recent:
            self.recent_menu.addAction("No recent datasets").setEnabled(False)
            return
        self.recent_menu.addSeparator()
        clear = self.recent_menu.addAction("Clear the list")
        clear.triggered.connect(lambda: self.settings.clear_recent("datasets"))

    def _on_dataset_page(self, ask: Callable[[], None]) -> None:
        self.go_to(self.dataset_page)
        ask()

    def open_dataset(self, path: str) -> None:
        self.go_to(self.dataset_page)
        self.dataset_page.open_path(path)

    def _show_welcome(self) -> None:
        self.welcome = WelcomeCard()
        self.cluster_page.body.insertWidget(0, self.welcome)
        self._describe_welcome()
        self.welcome.start_requested.connect(self._welcome_start)
        self.welcome.dismissed.connect(self._welcome_done)
        self.job.changed.connect(lambda s, n: self._describe_welcome())
        self.job.reset.connect(self._describe_welcome)

    def _describe_welcome(self) -> None:
        if self.welcome is not None:
            spec = self.job.spec
            folder = str(Path(spec.run.out_dir).expanduser().absolute())
            self.welcome.describe(spec.run.steps, spec.dist.workers, home_path(folder))

    def _welcome_start(self) -> None:
        self._welcome_done()
        self.start_run()

    def _welcome_done(self) -> None:
        if self.welcome is not None:
            self.welcome.hide()
        if not self.settings.value(WELCOME_DONE):  # each Start calls this: write it once
            self.settings.set_value(WELCOME_DONE, True)

    def _wire(self) -> None:
        for page in self.pages:
            signal = getattr(page, "message", None)
            if signal is not None:
                signal.connect(lambda text, level, page=page: self.show_message(text, level, page))
        self.bridge.peer.connect(self.cluster.on_peer_event)
        self.bridge.metric.connect(self.monitor_page.on_metric)
        self.bridge.progress.connect(self.monitor_page.on_progress)
        self.bridge.progress.connect(
            lambda e: self.run_label.setText(f"Step {e.step}/{e.total_steps}")
        )
        self.bridge.state.connect(self.monitor_page.on_state)
        self.bridge.state.connect(self._on_state)
        self.bridge.log.connect(self.monitor_page.append_log)
        self.transfer_panel.float_over(self.monitor_page.chart_area)  # never resizes the charts
        self.bridge.transfer.connect(self.transfer_panel.on_event)
        self.monitor_page.start_requested.connect(self.start_run)
        self.monitor_page.stop_requested.connect(self.stop_run)
        self.monitor_page.results_requested.connect(lambda: self.go_to(self.results_page))
        self.runner.started.connect(lambda _job: self._welcome_done())
        self.runner.ended.connect(self._on_run_ended)
        self.bridge.attached.connect(self._on_attached)
        self.runner.started.connect(lambda _job: self.runs_page.set_busy(True))
        plan = self.cluster_page.plan  # a probe during a run would take the run's cores
        self.runner.started.connect(lambda _job: plan.set_training(True))
        self.runner.ended.connect(lambda _error: plan.set_training(False))
        self.runs_page.open_adapter.connect(self._open_from_runs)
        self.runs_page.resume_requested.connect(self.resume_run)
        self.cluster_page.add_requested.connect(self.add_worker)
        self.cluster_page.remove_requested.connect(self.remove_worker)
        self.dataset_page.stats_ready.connect(self.training_page.set_dataset_size)
        self.cluster.changed.connect(self._update_summary)
        self.job.changed.connect(lambda s, n: self._update_summary() if s == "dist" else None)
        self.job.reset.connect(self._update_summary)

    def add_worker(self, host: str, port: int) -> None:
        if self.discovery is None or not self.discovery.add_manual(host, port):
            self.cluster.add_manual(f"{host}:{port}")

    def remove_worker(self, worker_id: str) -> None:
        worker = self.cluster.workers.get(worker_id)
        if worker is None:
            return
        host, _, port = worker.address.rpartition(":")
        if self.discovery is None or not self.discovery.remove_manual(host, int(port)):
            self.cluster.remove(worker_id)

    def _show_page(self, row: int) -> None:
        self.stack.setCurrentIndex(row)
        if self.pages[row] is self.runs_page:
            self.runs_page.refresh()

    def go_to(self, page: QWidget) -> None:
        self.sidebar.setCurrentRow(self.pages.index(page))

    def current_page(self) -> Page:
        return self.pages[max(0, self.stack.currentIndex())]

    @property
    def banner(self) -> Banner:
        """The message strip of the page on screen (each page has its own)."""
        return self.current_page().banner

    def show_message(self, text: str, level: str = "error", page: Page | None = None) -> None:
        """Show ``text`` on ``page`` (the page it is about), else on the page on screen."""
        (page or self.current_page()).show_message(text, level)
        if level == "error":
            log.warning("shown to the user: %s", text)

    def _update_summary(self) -> None:
        self.cluster_label.setText(self.cluster.summary(self.job.spec.dist.workers))

    # drag and drop: a dataset file or folder anywhere on the window -------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if not paths:
            return
        event.acceptProposedAction()
        if len(paths) > 1:
            self.show_message(
                "Drop one file or one folder (a folder may hold train/valid/test files).", "warning"
            )
        self.go_to(self.dataset_page)
        self.dataset_page.open_path(paths[0])

    # runs -------------------------------------------------------------------------------------------
    def start_run(self) -> None:
        if self.runner.running or self._checking:
            self.show_message("A run is already going. Stop it before starting another.", "warning")
            return
        try:
            job = self.job.snapshot()
        except ConfigError as e:
            self.show_message(
                "The job has settings to fix before it can start:\n" + describe_error(e)
            )
            return
        self._preflight_then(job, lambda: self._launch(job))

    def _preflight_then(
        self, job: JobSpec, launch: Callable[[], None], resume: bool = False
    ) -> None:
        """Check ``job`` off the GUI thread (engine/preflight.py: dataset, model, memory per
        machine), then launch it, or show why not with the fixes that fit. A refused run
        never starts a worker."""
        self._checking = True
        self.banner.hide()
        self.start_button.setEnabled(False)
        self.run_label.setText("Checking the job…")
        hosts = {w.address: w.memory_bytes for w in self.cluster.remote() if w.memory_bytes}

        def checked(result: PreflightResult) -> None:
            self._checking = False
            if result.ok:
                self.training_page.clear_refusal()
                launch()
                if result.notes:  # e.g. tight on memory: it runs, but say so where it runs
                    self.show_message("\n".join(result.notes), "warning", self.monitor_page)
                return
            self.start_button.setEnabled(True)
            self.run_label.setText("Ready")
            self.training_page.show_refusal(result, can_apply=not resume)
            self.go_to(self.training_page)

        def failed(message: str) -> None:
            self._checking = False
            self.start_button.setEnabled(True)
            self.run_label.setText("Ready")
            self.show_message(f"Could not check the job: {message}")

        local = self.cluster.local.memory_bytes or None
        run_task(preflight, job, host_memory=hosts, local_memory=local, owner=self,
                 on_done=checked, on_error=failed)  # fmt: skip

    def _launch(self, job: JobSpec) -> None:
        if self.runner.running:  # a run started while the job was being checked
            self.start_button.setEnabled(False)
            return
        n_train = self.dataset_page.train_count
        self.monitor_page.reset(total_steps_for(job, n_train) if n_train else job.run.steps)
        self.start_button.setEnabled(False)
        self.run_label.setText("Starting…")
        self.go_to(self.monitor_page)
        self.runner.start(job)

    def resume_run(self, run_dir: str) -> None:
        """Continue a stopped run from its last checkpoint, with the job it was started with."""
        if self.runner.running or self._checking:
            self.show_message("A run is already going. Stop it before resuming another.", "warning")
            return
        run_task(
            JobSpec.load,
            str(Path(run_dir) / "job.toml"),
            owner=self,
            on_done=lambda job: self._start_resumed(run_dir, job),
            on_error=lambda m: self.show_message(f"Cannot resume {Path(run_dir).name}: {m}"),
        )

    def _start_resumed(self, run_dir: str, job: JobSpec) -> None:
        if self.runner.running or self._checking:  # a run started while the job file was read
            self.show_message("A run is already going. Stop it before resuming another.", "warning")
            return
        self._preflight_then(job, lambda: self._launch_resumed(run_dir, job), resume=True)

    def _launch_resumed(self, run_dir: str, job: JobSpec) -> None:
        if self.runner.running:
            return
        self.monitor_page.reset(job.run.steps)  # "running" brings the exact range
        self.start_button.setEnabled(False)
        self.run_label.setText(f"Resuming {Path(run_dir).name}…")
        self.go_to(self.monitor_page)
        self.runner.start(job, resume_from=run_dir)
        self.load_history(run_dir)

    def load_history(self, run_dir: str) -> None:
        """Plot the run's steps so far (its metrics.jsonl, read off the GUI thread)."""
        path = Path(run_dir) / METRICS_FILE
        run_task(
            lambda: read_metrics(path) if path.is_file() else [],
            owner=self,
            on_done=self.monitor_page.load_history,
            on_error=lambda m: self.show_message(
                f"Cannot read this run's history: {m}", "warning", self.monitor_page
            ),
        )

    def stop_run(self) -> None:
        self.runner.stop()
        self.run_label.setText("Stopping at the next step…")

    def _on_state(self, e: StateEvent) -> None:
        self.run_label.setText(e.state.capitalize())
        if e.run_dir:
            self.runs_page.active_run = "" if e.state in ENDED else e.run_dir
        if e.state == "failed" and e.message:
            self.show_message(f"The run failed: {e.message}", "error", self.monitor_page)
        adapter = self.monitor_page.adapter_of(e)
        if adapter and self.runner.job is not None:
            self.open_adapter(adapter, self.runner.job.model.path)

    def _on_attached(self, e: RunAttached) -> None:
        """A run this window did not start (one that trained while the app was closed): its
        history follows on the Monitor from step 1, then its live events."""
        run = e.run
        total = run.total_steps or (self.runner.job.run.steps if self.runner.job else 1)
        # kept: a Start refused because of this very run says why, whichever event came first
        self.monitor_page.reset(total, keep_message=True)
        self.monitor_page.show_attached(run)
        if run.active:
            self.start_button.setEnabled(False)
            self.runs_page.set_busy(True)
            self.cluster_page.plan.set_training(True)
            self.run_label.setText("Training (attached)")
            self.go_to(self.monitor_page)
        else:
            self.monitor_page.set_running(False)

    def _on_run_ended(self, error: str) -> None:
        self.start_button.setEnabled(True)
        self.monitor_page.set_running(False)
        self.runs_page.set_busy(False)

    def _open_from_runs(self, adapter_dir: str, model: str) -> None:
        self.open_adapter(adapter_dir, model)
        self.go_to(self.results_page)

    def open_adapter(self, adapter_dir: str, model: str) -> None:
        run_task(
            adapter_files,
            adapter_dir,
            owner=self,
            on_done=lambda files: self.results_page.show_adapter(adapter_dir, model, files),
            on_error=self.show_message,
        )

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        choice = ask_close_during_run(self) if self.runner.running else ""
        if choice == CANCEL:
            event.ignore()
            return
        self.settings.set_value("window/geometry", self.saveGeometry())
        self.settings.set_value("job/last", self.job.spec.to_toml())
        self.settings.sync()
        if self.discovery is not None:
            self.discovery.stop()
        if choice == STOP:
            self.runner.stop()  # the engine checkpoints and stops with no window to watch
        if self.runner.running:
            self.runner.detach()  # the run trains on in the engine process
        else:
            self.runner.release()  # an idle engine exits now
        super().closeEvent(event)
