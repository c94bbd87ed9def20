"""Before a run trains: the coordinator's model download, then each Mac's files, with progress.

Fed by engine.events.DownloadEvent and ShipEvent through the bridge (GUI thread). One row per
transfer: the download, and one per worker ("sent 1.2 of 3.4 GB at 95 MB/s", or "already
holds every file" when its cache had them: workers keep files by hash). The panel hides
itself while nothing is moving.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QGridLayout, QLabel, QProgressBar, QWidget

from engine.events import DownloadEvent, ShipEvent
from engine.model.cache import human_bytes

HIDE_AFTER_MS = 8000  # finished rows stay readable for a moment


def ship_text(e: ShipEvent) -> str:
    if e.done and e.total_bytes == 0:
        return f"already holds every file ({human_bytes(e.held_bytes)})"
    rate = f" at {human_bytes(int(e.rate_bps))}/s" if e.rate_bps else ""
    held = f"; {human_bytes(e.held_bytes)} already there" if e.held_bytes else ""
    verb = "sent" if e.done else "sending"
    return (f"{verb} {human_bytes(e.sent_bytes)} of {human_bytes(e.total_bytes)}{rate}"
            f" ({e.files_sent}/{e.files_total} files{held})")  # fmt: skip


def download_text(e: DownloadEvent) -> str:
    if e.finished:
        return f"{e.repo_id}: in the cache ({human_bytes(e.total_bytes)})"
    return (f"{e.repo_id}: {human_bytes(e.done_bytes)} of {human_bytes(e.total_bytes)}"
            f" · file {min(e.files_done + 1, e.files_total)}/{e.files_total} {e.file}")  # fmt: skip


class TransferPanel(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 4, 0, 4)
        self.rows: dict[str, tuple[QLabel, QProgressBar, QLabel]] = {}
        self._hide = QTimer(self, singleShot=True, interval=HIDE_AFTER_MS)
        self._hide.timeout.connect(self.clear)
        self.setVisible(False)

    def on_event(self, e: object) -> None:
        if isinstance(e, DownloadEvent):
            key, title, text = "download", "Downloading the model", download_text(e)
            done, total, finished = e.done_bytes, e.total_bytes, e.finished
        elif isinstance(e, ShipEvent):
            key, title, text = e.worker, f"→ {e.worker}", ship_text(e)
            done, total, finished = e.sent_bytes, e.total_bytes, e.done
        else:
            return
        _, bar, label = self._row(key, title)
        bar.setValue(int(1000 * done / total) if total else 1000)
        label.setText(text)
        self.setVisible(True)
        if finished and all(b.value() >= 1000 for _, b, _ in self.rows.values()):
            self._hide.start()
        else:
            self._hide.stop()

    def _row(self, key: str, title: str) -> tuple[QLabel, QProgressBar, QLabel]:
        if key not in self.rows:
            name, bar, text = QLabel(title), QProgressBar(), QLabel()
            bar.setRange(0, 1000)
            bar.setTextVisible(False)
            bar.setMaximumHeight(10)
            r = len(self.rows)
            self.grid.addWidget(name, r, 0)
            self.grid.addWidget(bar, r, 1)
            self.grid.addWidget(text, r, 2)
            self.grid.setColumnStretch(1, 1)
            self.rows[key] = (name, bar, text)
        return self.rows[key]

    def clear(self) -> None:
        for widgets in self.rows.values():
            for w in widgets:
                w.deleteLater()
        self.rows.clear()
        self.setVisible(False)
