"""What the app remembers between launches (QSettings, organization "Orchard")."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

from engine.config import JobSpec

ORGANIZATION = "Orchard"
APPLICATION = "Orchard"
RECENT_LIMIT = 10


class AppSettings:
    """Recent items, the folders file dialogs last opened, window geometry, the last job and
    the runs folder, over one QSettings store."""

    def __init__(self, store: QSettings | None = None):
        self.store = store or QSettings(ORGANIZATION, APPLICATION)

    def recent(self, kind: str) -> list[str]:
        value = self.store.value(f"recent/{kind}", [])
        if isinstance(value, str):  # QSettings hands back a bare string for one-item lists
            value = [value]
        return [str(v) for v in value or []]

    def add_recent(self, kind: str, item: str) -> None:
        items = [item] + [i for i in self.recent(kind) if i != item]
        self.store.setValue(f"recent/{kind}", items[:RECENT_LIMIT])

    def clear_recent(self, kind: str) -> None:
        self.store.remove(f"recent/{kind}")

    def last_folder(self, kind: str) -> str:
        """The folder a file dialog for ``kind`` opened in last time, else the home folder
        (not the folder the app happened to start in: "/" when opened from the Finder)."""
        folder = self.store.value(f"dialogs/{kind}", "")
        return str(folder) if folder and Path(str(folder)).is_dir() else str(Path.home())

    def remember_folder(self, kind: str, folder: str) -> None:
        self.store.setValue(f"dialogs/{kind}", folder)

    def runs_folder(self) -> str:
        """Where the app puts run folders, a full path: the user's choice, else the engine's
        default for this user."""
        chosen = self.store.value("runs/folder", "")
        if isinstance(chosen, str) and chosen and Path(chosen).is_absolute():
            return chosen
        return str(Path(JobSpec().run.out_dir).expanduser())

    def set_runs_folder(self, folder: str) -> None:
        self.store.setValue("runs/folder", folder)

    def value(self, key: str, fallback: object = None) -> object:
        return self.store.value(key, fallback)

    def set_value(self, key: str, value: object) -> None:
        self.store.setValue(key, value)

    def sync(self) -> None:
        self.store.sync()
