"""The JobSpec being edited, shared by every page.

Pages never keep their own copy of a setting: they write through ``set`` and redraw on
``changed``/``reset``. Defaults come from ``JobSpec()`` alone (engine/config.py).

A control that refused what the user typed (out of the field's range) says so here too, so
``snapshot`` refuses to hand the engine a job that is not what the window shows.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal

from engine.config import ConfigError, JobSpec, field_help


class JobModel(QObject):
    changed = Signal(str, str)  # section, name
    reset = Signal()  # the whole spec was replaced (opened a TOML, restored settings)
    refusals_changed = Signal()

    def __init__(self, spec: JobSpec | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self._spec = spec or JobSpec()
        self._refused: dict[tuple[str, str], str] = {}

    @property
    def spec(self) -> JobSpec:
        return self._spec

    def get(self, section: str, name: str) -> Any:
        return getattr(getattr(self._spec, section), name)

    def set(self, section: str, name: str, value: Any) -> None:
        if self.get(section, name) == value:
            return
        setattr(getattr(self._spec, section), name, value)
        self.changed.emit(section, name)

    def replace(self, spec: JobSpec) -> None:
        self._spec = spec
        self.reset.emit()

    def refuse(self, section: str, name: str, reason: str) -> None:
        """A control shows a value the job did not take, and why ('' when that is over)."""
        key = (section, name)
        if self._refused.get(key, "") == reason:
            return
        if reason:
            self._refused[key] = reason
        else:
            self._refused.pop(key, None)
        self.refusals_changed.emit()

    def refusals(self) -> list[str]:
        return list(self._refused.values())

    def snapshot(self) -> JobSpec:
        """A validated deep copy to hand to the engine (raises ConfigError with every fault,
        including values a control refused: the job must be what the window shows)."""
        if self._refused:
            raise ConfigError(self.refusals())
        spec = JobSpec.from_dict(self._spec.to_dict())
        return spec


def meta(section: str, name: str) -> dict[str, Any]:
    """Help text and rules of one setting, straight from engine/config.py."""
    return field_help(section, name)


def default(section: str, name: str) -> Any:
    """The engine's default for one setting (never a second copy here)."""
    return getattr(getattr(JobSpec(), section), name)
