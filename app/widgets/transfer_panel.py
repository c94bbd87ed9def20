"""Before a run trains: the coordinator's model download, then each Mac's files, with progress.

Fed by engine.events.DownloadEvent and ShipEvent through the bridge (GUI thread). One row per
transfer: the download, and one per worker ("sent 1.2 of 3.4 GB at 95 MB/s", or "already
holds every file" when its cache had them: workers keep files by hash). The panel hides
itself while nothing is moving.

On the Monitor it floats over the top right of the charts (``float_over``) rather than taking
a place in the page's layout: rows that come and go then never resize the charts, which would
repaint all six at once (a visible stall, mostly while the run starts). The charts are still
empty while the model travels.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtWidgets import QGridLayout, QLabel, QProgressBar, QWidget

from engine.events import DownloadEvent, ShipEvent
from engine.model.cache import human_bytes

HIDE_AFTER_MS = 8000  # finished rows stay readable for a moment
MARGIN = 8  # between a floating panel and its host's edges
FLOAT_STYLE = (
    "QWidget#transfers { background: white; border: 1px solid #c8cfc6; border-radius: 6px; }"
)


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
        self._host: QWidget | None = None
        self.setVisible(False)

    def float_over(self, host: QWidget) -> None:
        """Show over the top right of ``host`` (a card, outside any layout) from now on."""
        self._host = host
        self.setParent(host)
        self.setObjectName("transfers")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setStyleSheet(FLOAT_STYLE)
        self.grid.setContentsMargins(10, 6, 10, 6)
        host.installEventFilter(self)
        self.setVisible(bool(self.rows))

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if watched is self._host and event.type() == QEvent.Type.Resize:
            self._place()
        return False

    def _place(self) -> None:
        host = self._host
        if host is None:
            return
        self.grid.invalidate()  # rows just added count in its size hint
        hint = self.grid.totalSizeHint()
        wanted = max(hint.width(), host.width() // 2, self.width() if self.isVisible() else 0)
        width = max(1, min(host.width() - 2 * MARGIN, wanted))  # grows with its text, no jitter
        height = max(1, min(hint.height(), host.height() - 2 * MARGIN))
        self.setGeometry(host.width() - width - MARGIN, MARGIN, width, height)
        self.raise_()

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
        self._place()  # a new row, a longer text: the card fits them
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
            for w in (name, bar, text):
                w.show()  # now, not queued: the row counts in the size it is placed at
            self.grid.setColumnStretch(1, 1)
            self.rows[key] = (name, bar, text)
        return self.rows[key]

    def clear(self) -> None:
        for widgets in self.rows.values():
            for w in widgets:
                w.deleteLater()
        self.rows.clear()
        self.setVisible(False)
