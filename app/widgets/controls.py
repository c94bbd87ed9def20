"""Controls bound to one JobSpec field, built from the field's metadata.

Ranges, choices and help text come from ``engine/config.py``; a slider may show a narrower
"comfortable" range than the spin box, which always accepts the field's full range. Nothing
is clamped silently: a value outside the range is refused with the reason under the field.
Every control takes the wheel only while it has focus (app/widgets/wheel.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QPalette, QValidator
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.job_model import JobModel, default, meta
from app.widgets.wheel import guard_wheel

SLIDER_STEPS = 1000
SPIN_WIDTH = 120
TYPED_LIMIT = 1e15  # what a float box lets one type; the field's own limits are checked after


class FieldSpinBox(QSpinBox):
    """An integer box that takes any number typed (the field's limits are checked by
    NumberControl, which says why it refuses one); the arrows stay inside the limits."""

    def __init__(self, lo: int, hi: int):
        super().__init__()
        self.lo, self.hi = lo, hi
        self.setRange(-(2**31) + 1, 2**31 - 1)

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt override
        self.setValue(min(max(self.value() + steps * self.singleStep(), self.lo), self.hi))

    def stepEnabled(self) -> QAbstractSpinBox.StepEnabledFlag:  # noqa: N802 - Qt override
        return _steps(self.value(), self.lo, self.hi)


class FieldDoubleSpinBox(QDoubleSpinBox):
    """The float version of FieldSpinBox."""

    def __init__(self, lo: float, hi: float, decimals: int):
        super().__init__()
        self.lo, self.hi = lo, hi
        self.setDecimals(decimals)
        self.setRange(-TYPED_LIMIT, TYPED_LIMIT)
        self.setSingleStep(10**-decimals * 10 if decimals > 1 else 0.1)

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt override
        self.setValue(min(max(self.value() + steps * self.singleStep(), self.lo), self.hi))

    def stepEnabled(self) -> QAbstractSpinBox.StepEnabledFlag:  # noqa: N802 - Qt override
        return _steps(self.value(), self.lo, self.hi)


class SciSpinBox(FieldDoubleSpinBox):
    """A spin box that shows and accepts scientific notation (1e-4, 3.5e-05)."""

    def __init__(self, lo: float, hi: float):
        super().__init__(lo, hi, 12)
        self.setKeyboardTracking(False)

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt override
        return f"{value:.4g}"

    def valueFromText(self, text: str) -> float:  # noqa: N802 - Qt override
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> object:
        stripped = text.strip()
        if not stripped:
            return QValidator.State.Intermediate
        try:
            value = float(stripped)
        except ValueError:
            ok = all(c in "0123456789.eE+-" for c in stripped)
            return QValidator.State.Intermediate if ok else QValidator.State.Invalid
        if abs(value) <= TYPED_LIMIT:
            return QValidator.State.Acceptable
        return QValidator.State.Intermediate

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt override
        # Step by a factor of ~1.26 (10 steps per decade), the natural unit for rates.
        value = self.value() or self.lo or 1e-6
        self.setValue(min(max(value * (10 ** (steps / 10)), self.lo), self.hi))


def _steps(value: float, lo: float, hi: float) -> QAbstractSpinBox.StepEnabledFlag:
    flags = QAbstractSpinBox.StepEnabledFlag.StepNone
    if value < hi:
        flags |= QAbstractSpinBox.StepEnabledFlag.StepUpEnabled
    if value > lo:
        flags |= QAbstractSpinBox.StepEnabledFlag.StepDownEnabled
    return flags


def format_limit(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def refusal(value: float, lo: float | None, hi: float | None) -> str:
    """Why ``value`` is not allowed for a field limited to [lo, hi] ('' when it is)."""
    if value != value:
        return "not a number"
    if lo is not None and value < lo:
        return f"{format_limit(value)} is below the minimum, {format_limit(lo)}"
    if hi is not None and value > hi:
        return f"{format_limit(value)} is above the maximum, {format_limit(hi)}"
    return ""


class NumberControl(QWidget):
    """Slider + exact spin box for one numeric field, kept in sync both ways.

    A value outside the field's limits (engine/config.py) is refused where it was typed: the
    box turns red, the reason shows under it, and the job keeps its last good value (the job
    knows, so Start says so too). ``warn`` may return a caution for a value that is allowed
    but probably a mistake; it shows in amber and the value is kept.
    """

    valueChanged = Signal(object)  # noqa: N815 - Qt naming

    def __init__(
        self,
        job: JobModel,
        section: str,
        name: str,
        slider_range: tuple[float, float] | None = None,
        log_scale: bool = False,
        decimals: int = 3,
        slider: bool = True,
        warn: Callable[[float], str] | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.job, self.section, self.name = job, section, name
        rules = meta(section, name)
        self.is_int = isinstance(default(section, name), int)
        self.lo, self.hi = rules.get("min"), rules.get("max")
        lo = self.lo if self.lo is not None else 0
        hi = self.hi if self.hi is not None else 1e9
        self.log_scale = log_scale
        self.warn = warn
        if self.is_int:
            self.spin: QSpinBox | QDoubleSpinBox = FieldSpinBox(int(lo), int(min(hi, 2**31 - 1)))
        elif log_scale:
            self.spin = SciSpinBox(float(lo), float(hi))
        else:
            self.spin = FieldDoubleSpinBox(float(lo), float(hi), decimals)
        self.spin.setKeyboardTracking(False)
        # One width for every box, wide enough for the field's own limits (the box itself
        # takes far wider input, which would otherwise make it as wide as 1e15).
        widest = max(len(self.spin.textFromValue(x)) for x in (lo, hi)) + 1
        need = self.spin.fontMetrics().horizontalAdvance("0" * widest) + 40
        self.spin.setFixedWidth(max(SPIN_WIDTH, need))
        self.slo, self.shi = slider_range or (lo, hi)
        if log_scale and self.slo <= 0:
            raise ValueError(f"{section}.{name}: a log slider needs a positive lower bound")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setVisible(slider)
        guard_wheel(self.spin, self.slider)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.note.hide()
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.slider, 1)
        row.addWidget(self.spin)
        if not slider:
            row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(row)
        layout.addWidget(self.note)
        limits = f" (allowed: {format_limit(lo)} to {format_limit(hi)})"
        self.setToolTip(rules.get("help", "") + limits)
        self._syncing = False
        self.refused = ""  # why the shown value was refused; '' when the box shows the job's
        self.refresh()
        self.slider.valueChanged.connect(self._from_slider)
        self.spin.valueChanged.connect(self._from_spin)
        job.changed.connect(lambda s, n: self.refresh() if (s, n) == (section, name) else None)
        job.reset.connect(self.refresh)

    # slider position <-> value ------------------------------------------------------------
    def _to_pos(self, value: float) -> int:
        lo, hi = self.slo, self.shi
        value = min(max(value, lo), hi)
        if self.log_scale:
            frac = (math.log10(max(value, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        else:
            frac = (value - lo) / (hi - lo) if hi > lo else 0.0
        return round(frac * SLIDER_STEPS)

    def _from_pos(self, pos: int) -> float:
        frac = pos / SLIDER_STEPS
        if self.log_scale:
            value = 10 ** (
                math.log10(self.slo) + frac * (math.log10(self.shi) - math.log10(self.slo))
            )
            return float(f"{value:.2g}")  # land on round numbers: 1e-4, 2e-4, 3e-4 ...
        value = self.slo + frac * (self.shi - self.slo)
        return round(value) if self.is_int else round(value, self.spin.decimals())

    # sync -----------------------------------------------------------------------------------
    def value(self) -> Any:
        return self.job.get(self.section, self.name)

    def refresh(self) -> None:
        """Show the job's value (it changed, or the job was replaced): nothing is refused."""
        self._syncing = True
        try:
            value = self.value()
            self.spin.setValue(value)
            self.slider.setValue(self._to_pos(value))
        finally:
            self._syncing = False
        self._set_refused("")
        self._show_warning(self.value())

    def _from_slider(self, pos: int) -> None:
        if self._syncing:
            return
        self.spin.setValue(self._from_pos(pos))  # spin box then writes the job

    def _from_spin(self, value: float) -> None:
        if self._syncing:
            return
        value = int(value) if self.is_int else float(value)
        why = refusal(value, self.lo, self.hi)
        if why:
            self._set_refused(why)
            return
        self._syncing = True
        try:
            self.slider.setValue(self._to_pos(value))
        finally:
            self._syncing = False
        self._set_refused("")
        self.job.set(self.section, self.name, value)
        self._show_warning(value)
        self.valueChanged.emit(value)

    def _set_refused(self, why: str) -> None:
        self.refused = why
        key = f"{self.section}.{self.name}"
        if why:
            kept = format_limit(self.value())
            self.job.refuse(self.section, self.name, f"{key}: {why} (the job keeps {kept})")
            palette = self.spin.palette()  # a palette, not a style sheet: the arrows stay native
            palette.setColor(QPalette.ColorRole.Base, QColor("#fdecea"))
            palette.setColor(QPalette.ColorRole.Text, QColor("#c62828"))
            self.spin.setPalette(palette)
            self.note.setStyleSheet("color:#c62828; font-size: 9pt;")
            self.note.setText(f"Not used: {why}. The job keeps {kept}.")
            self.note.show()
        else:
            self.job.refuse(self.section, self.name, "")
            self.spin.setPalette(QPalette())
            self.note.hide()

    def _show_warning(self, value: float) -> None:
        if self.refused:
            return
        caution = self.warn(value) if self.warn is not None else ""
        self.note.setStyleSheet("color:#8a5a00; font-size: 9pt;")
        self.note.setText(caution)
        self.note.setVisible(bool(caution))


class ChoiceControl(QComboBox):
    """A combo box over the field's ``choices``."""

    def __init__(
        self, job: JobModel, section: str, name: str, labels: dict[str, str] | None = None
    ):
        super().__init__()
        self.job, self.section, self.name = job, section, name
        rules = meta(section, name)
        for choice in rules["choices"]:
            self.addItem((labels or {}).get(str(choice), str(choice)), choice)
        self.setToolTip(rules.get("help", ""))
        guard_wheel(self)
        self.refresh()
        self.currentIndexChanged.connect(lambda i: job.set(section, name, self.itemData(i)))
        job.changed.connect(lambda s, n: self.refresh() if (s, n) == (section, name) else None)
        job.reset.connect(self.refresh)

    def refresh(self) -> None:
        index = self.findData(self.job.get(self.section, self.name))
        if index >= 0 and index != self.currentIndex():
            self.setCurrentIndex(index)


class BoolControl(QCheckBox):
    """A check box for a boolean field; its text is the field's help."""

    def __init__(self, job: JobModel, section: str, name: str, text: str | None = None):
        super().__init__(text or meta(section, name).get("help", name))
        self.job, self.section, self.name = job, section, name
        self.setToolTip(meta(section, name).get("help", ""))
        self.refresh()
        self.toggled.connect(lambda on: job.set(section, name, bool(on)))
        job.changed.connect(lambda s, n: self.refresh() if (s, n) == (section, name) else None)
        job.reset.connect(self.refresh)

    def refresh(self) -> None:
        self.setChecked(bool(self.job.get(self.section, self.name)))
