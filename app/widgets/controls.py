"""Controls bound to one JobSpec field, built from the field's metadata.

Ranges, choices and help text come from ``engine/config.py``; a slider may show a narrower
"comfortable" range than the spin box, which always accepts the field's full range.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QSlider,
    QSpinBox,
    QWidget,
)

from app.job_model import JobModel, default, meta

SLIDER_STEPS = 1000


class SciSpinBox(QDoubleSpinBox):
    """A spin box that shows and accepts scientific notation (1e-4, 3.5e-05)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setDecimals(12)
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
        if self.minimum() <= value <= self.maximum():
            return QValidator.State.Acceptable
        return QValidator.State.Intermediate

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt override
        # Step by a factor of ~1.26 (10 steps per decade), the natural unit for rates.
        value = self.value() or self.minimum() or 1e-6
        self.setValue(value * (10 ** (steps / 10)))


class NumberControl(QWidget):
    """Slider + exact spin box for one numeric field, kept in sync both ways."""

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
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.job, self.section, self.name = job, section, name
        rules = meta(section, name)
        self.is_int = isinstance(default(section, name), int)
        lo, hi = rules.get("min", 0), rules.get("max", 1e9)
        self.log_scale = log_scale
        if self.is_int:
            self.spin: QSpinBox | QDoubleSpinBox = QSpinBox()
            self.spin.setRange(int(lo), int(min(hi, 2**31 - 1)))
        elif log_scale:
            self.spin = SciSpinBox()
            self.spin.setRange(float(lo), float(hi))
        else:
            self.spin = QDoubleSpinBox()
            self.spin.setDecimals(decimals)
            self.spin.setRange(float(lo), float(hi))
            self.spin.setSingleStep(10**-decimals * 10 if decimals > 1 else 0.1)
        self.spin.setKeyboardTracking(False)
        self.spin.setMinimumWidth(96)
        self.slo, self.shi = slider_range or (lo, hi)
        if log_scale and self.slo <= 0:
            raise ValueError(f"{section}.{name}: a log slider needs a positive lower bound")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setVisible(slider)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.spin)
        self.setToolTip(rules.get("help", ""))
        self._syncing = False
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
        self._syncing = True
        try:
            value = self.value()
            self.spin.setValue(value)
            self.slider.setValue(self._to_pos(value))
        finally:
            self._syncing = False

    def _from_slider(self, pos: int) -> None:
        if self._syncing:
            return
        self.spin.setValue(self._from_pos(pos))  # spin box then writes the job

    def _from_spin(self, value: float) -> None:
        if self._syncing:
            return
        value = int(value) if self.is_int else float(value)
        self._syncing = True
        try:
            self.slider.setValue(self._to_pos(value))
        finally:
            self._syncing = False
        self.job.set(self.section, self.name, value)
        self.valueChanged.emit(value)


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
