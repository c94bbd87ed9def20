"""What the app remembers between launches (QSettings, organization "Orchard").

Writing is left to a thread of its own. A QSettings store writes a changed file back from
the event loop, on the GUI thread, through a QSaveFile that ends in an fsync: a wait on the
disk (40 ms seen on a busy one) in the middle of the window's frames. So a value set here is
kept in memory, where reads find it at once, and a writer thread puts it on disk through a
QSettings of its own on the same store (QSettings is reentrant, and its file writes are
locked and atomic). ``sync()`` waits for that writer, for a window that closes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSettings

from engine.config import JobSpec

log = logging.getLogger(__name__)

ORGANIZATION = "Orchard"
APPLICATION = "Orchard"
RECENT_LIMIT = 10
SYNC_TIMEOUT_S = 10.0
_REMOVED = object()  # a key removed in this session
_ABSENT = object()


class AppSettings:
    """Recent items, the folders file dialogs last opened, window geometry, the last job and
    the runs folder, over one QSettings store (read on the GUI thread, written off it)."""

    def __init__(self, store: QSettings | None = None):
        self.store = store or QSettings(ORGANIZATION, APPLICATION)
        if store is None:
            self._open_writer: Callable[[], QSettings] = lambda: QSettings(
                ORGANIZATION, APPLICATION
            )
        else:  # read here: the writer thread never touches the GUI thread's store
            where, kind = store.fileName(), store.format()
            self._open_writer = lambda: QSettings(where, kind)
        self._session: dict[str, object] = {}  # every key set or removed since launch
        self._unwritten: dict[str, object] = {}
        self._lock = threading.Lock()
        self._written = threading.Event()
        self._written.set()

    def recent(self, kind: str) -> list[str]:
        value = self.value(f"recent/{kind}", [])
        if isinstance(value, str):  # QSettings hands back a bare string for one-item lists
            value = [value]
        return [str(v) for v in value or []]

    def add_recent(self, kind: str, item: str) -> None:
        items = [item] + [i for i in self.recent(kind) if i != item]
        self.set_value(f"recent/{kind}", items[:RECENT_LIMIT])

    def clear_recent(self, kind: str) -> None:
        self._change(f"recent/{kind}", _REMOVED)

    def last_folder(self, kind: str) -> str:
        """The folder a file dialog for ``kind`` opened in last time, else the home folder
        (not the folder the app happened to start in: "/" when opened from the Finder)."""
        folder = self.value(f"dialogs/{kind}", "")
        return str(folder) if folder and Path(str(folder)).is_dir() else str(Path.home())

    def remember_folder(self, kind: str, folder: str) -> None:
        self.set_value(f"dialogs/{kind}", folder)

    def runs_folder(self) -> str:
        """Where the app puts run folders, a full path: the user's choice, else the engine's
        default for this user."""
        chosen = self.value("runs/folder", "")
        if isinstance(chosen, str) and chosen and Path(chosen).is_absolute():
            return chosen
        return str(Path(JobSpec().run.out_dir).expanduser())

    def set_runs_folder(self, folder: str) -> None:
        self.set_value("runs/folder", folder)

    def value(self, key: str, fallback: object = None) -> object:
        mine = self._session.get(key, _ABSENT)
        if mine is _ABSENT:
            return self.store.value(key, fallback)
        return fallback if mine is _REMOVED else mine

    def set_value(self, key: str, value: object) -> None:
        self._change(key, value)

    def sync(self, timeout_s: float = SYNC_TIMEOUT_S) -> bool:
        """Wait until what was set is on disk (a closing window); False if it timed out."""
        return self._written.wait(timeout_s)

    def _change(self, key: str, value: object) -> None:
        if self._session.get(key, _ABSENT) == value:
            return  # nothing new to write
        self._session[key] = value
        with self._lock:
            self._unwritten[key] = value
            start = self._written.is_set()
            self._written.clear()
        if start:  # not a daemon: an app that exits right after still writes it
            threading.Thread(target=self._write, name="orchard-settings", daemon=False).start()

    def _write(self) -> None:
        """The writer thread: what was set meanwhile, in order, until nothing is left."""
        while True:
            with self._lock:
                changes, self._unwritten = self._unwritten, {}
                if not changes:
                    self._written.set()
                    return
            try:
                store = self._open_writer()
                for key, value in changes.items():
                    if value is _REMOVED:
                        store.remove(key)
                    else:
                        store.setValue(key, value)
                store.sync()
                if store.status() != QSettings.Status.NoError:
                    log.warning("could not save the app's settings in %s", store.fileName())
                del store  # here: this QSettings lives and dies in this thread
            except Exception:  # noqa: BLE001 - the writer must always end its wait
                log.exception("could not save the app's settings")
