"""The model picker: what the Hugging Face cache holds, what an id is before downloading it,
and the download itself with progress and cancel.

Everything slow (scanning the cache, asking the Hub, downloading) runs on a pool thread
(app/tasks.py); progress comes back as a queued Qt signal, so the window never waits. The
engine side is engine/model/cache.py, hub.py and download.py.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.tasks import run_task
from engine.model.cache import CachedModel, hub_offline, human_bytes, list_cached_models
from engine.model.download import DownloadProgress, ensure_model
from engine.model.hub import RemoteModel, inspect_remote

COLUMNS = ("Model", "Size", "Architecture", "Quantization", "State")


class _Progress(QObject):
    """Carries DownloadProgress from the download thread to the GUI thread (queued)."""

    changed = Signal(object)


def cached_rows(models: list[CachedModel]) -> list[tuple[str, ...]]:
    rows = []
    for m in models:
        state = "ready" if m.complete else "incomplete: missing " + ", ".join(m.missing[:2])
        if m.partial_bytes:
            state += f" ({human_bytes(m.partial_bytes)} to resume)"
        rows.append((m.repo_id, human_bytes(m.size_bytes), m.architecture, m.quant_text, state))
    return rows


class ModelPicker(QDialog):
    """Pick a cached model, or look an id up and download it. ``chosen(id)`` when done."""

    chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None, initial_id: str = ""):
        super().__init__(parent)
        self.setWindowTitle("Choose a model")
        self.resize(760, 520)
        self.remote: RemoteModel | None = None
        self.cached: dict[str, CachedModel] = {}
        self.cancel_event: threading.Event | None = None
        self._progress = _Progress(self)
        self._progress.changed.connect(self._on_progress)
        layout = QVBoxLayout(self)

        layout.addWidget(QLabel("<b>In the Hugging Face cache</b> (no download needed)"))
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._on_select)
        self.table.itemDoubleClicked.connect(lambda _item: self._use())
        layout.addWidget(self.table, 1)
        self.cache_note = QLabel("Reading the cache…")
        self.cache_note.setWordWrap(True)
        layout.addWidget(self.cache_note)

        layout.addWidget(QLabel("<b>A Hugging Face id</b>"))
        row = QHBoxLayout()
        self.id_edit = QLineEdit(initial_id)
        self.id_edit.setPlaceholderText("e.g. mlx-community/Qwen2.5-0.5B-Instruct-4bit")
        self.id_edit.returnPressed.connect(self.look_up)
        self.look_up_button = QPushButton("Look up")
        self.look_up_button.clicked.connect(self.look_up)
        row.addWidget(self.id_edit, 1)
        row.addWidget(self.look_up_button)
        layout.addLayout(row)
        self.details = QLabel("Type an id to see its size and architecture before downloading.")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.details)
        self.bar = QProgressBar()
        self.bar.setVisible(False)
        layout.addWidget(self.bar)

        buttons = QHBoxLayout()
        self.download_button = QPushButton("Download")
        self.download_button.setEnabled(False)
        self.download_button.clicked.connect(self.download)
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button = QPushButton("Use this model")
        self.use_button.setEnabled(False)
        self.use_button.setDefault(True)
        self.use_button.clicked.connect(self._use)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        for b in (self.download_button, self.cancel_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.use_button)
        buttons.addWidget(close)
        layout.addLayout(buttons)
        self.refresh_cache()

    # the cache ---------------------------------------------------------------------------------
    def refresh_cache(self) -> None:
        run_task(list_cached_models, owner=self, on_done=self._show_cache,
                 on_error=lambda m: self.cache_note.setText(f"Cannot read the cache: {m}"))  # fmt: skip

    def _show_cache(self, models: list[CachedModel]) -> None:
        self.cached = {m.repo_id: m for m in models}
        rows = cached_rows(models)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                self.table.setItem(r, c, QTableWidgetItem(text))
        ready = sum(m.complete for m in models)
        note = f"{ready} model{'s' if ready != 1 else ''} ready in the cache."
        if hub_offline():
            note += " Offline (HF_HUB_OFFLINE): only these can be used; nothing is downloaded."
        self.cache_note.setText(note)

    def _on_select(self) -> None:
        items = self.table.selectedItems()
        if items:
            repo_id = self.table.item(items[0].row(), 0).text()
            self.id_edit.setText(repo_id)
            m = self.cached.get(repo_id)
            self.use_button.setEnabled(m is not None and m.complete)
            self.download_button.setEnabled(m is not None and not m.complete and not hub_offline())

    # an id ---------------------------------------------------------------------------------------
    def look_up(self) -> None:
        repo_id = self.id_edit.text().strip()
        if not repo_id:
            return
        self.details.setText(f"Asking the Hub about {repo_id}…")
        self.look_up_button.setEnabled(False)
        run_task(inspect_remote, repo_id, owner=self, on_done=self._looked_up,
                 on_error=self._failed)  # fmt: skip

    def _looked_up(self, remote: RemoteModel) -> None:
        self.look_up_button.setEnabled(True)
        self.remote = remote
        info, repo = remote.info, remote.repo
        quant = (f"{info.quantization.get('bits')}-bit g{info.quantization.get('group_size')}"
                 if info.quantization else info.dtype)  # fmt: skip
        text = (f"<b>{repo.repo_id}</b>: {info.architectures[0] if info.architectures else info.model_type}"
                f" · {info.param_count / 1e6:,.1f}M parameters · {info.num_layers} layers · {quant}"
                f"<br>Download: {human_bytes(repo.total_bytes)} in {len(repo.files)} files")  # fmt: skip
        if not info.supported:
            text += "<br><span style='color:#c62828'>mlx-lm does not support this model type</span>"
        if repo.gated:
            text += "<br>Gated: accept its license on huggingface.co and log in first."
        text += "<br>Already in the cache." if remote.cached else ""
        self.details.setText(text)
        self.use_button.setEnabled(remote.cached is not None and info.supported)
        self.download_button.setEnabled(remote.cached is None and info.supported)

    def _failed(self, message: str) -> None:
        self.look_up_button.setEnabled(True)
        self.details.setText(f"<span style='color:#c62828'>{message}</span>")
        self.download_button.setEnabled(False)

    # download ----------------------------------------------------------------------------------
    def download(self) -> None:
        repo_id = self.id_edit.text().strip()
        if not repo_id:
            return
        self.cancel_event = threading.Event()
        self.bar.setVisible(True)
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.download_button.setEnabled(False)
        self.cancel_button.setVisible(True)
        self.use_button.setEnabled(False)
        run_task(ensure_model, repo_id, None, self._progress.changed.emit, self.cancel_event,
                 owner=self, on_done=self._downloaded, on_error=self._download_failed)  # fmt: skip

    def cancel(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()
            self.cancel_button.setEnabled(False)
            self.bar.setFormat("cancelling…")

    def _on_progress(self, p: DownloadProgress) -> None:
        self.bar.setValue(int(1000 * p.fraction))
        resumed = f" (resumed at {human_bytes(p.resumed_from)})" if p.resumed_from else ""
        self.bar.setFormat(f"{human_bytes(p.done_bytes)} of {human_bytes(p.total_bytes)}"
                           f" · file {min(p.files_done + 1, p.files_total)}/{p.files_total} {p.file}{resumed}")  # fmt: skip

    def _downloaded(self, folder: object) -> None:
        self._download_ended()
        self.bar.setValue(1000)
        self.bar.setFormat("downloaded")
        self.use_button.setEnabled(True)
        self.refresh_cache()

    def _download_failed(self, message: str) -> None:
        self._download_ended()
        self.bar.setFormat("cancelled" if "cancelled" in message else "failed")
        self.details.setText(f"<span style='color:#c62828'>{message}</span>")
        self.download_button.setEnabled(True)
        self.refresh_cache()

    def _download_ended(self) -> None:
        self.cancel_event = None
        self.cancel_button.setVisible(False)
        self.cancel_button.setEnabled(True)

    def _use(self) -> None:
        repo_id = self.id_edit.text().strip()
        if repo_id and self.use_button.isEnabled():
            self.chosen.emit(repo_id)
            self.accept()

    def reject(self) -> None:  # closing the dialog cancels a download in flight
        self.cancel()
        super().reject()
