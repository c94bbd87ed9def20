"""Common page frame: a title, one line saying what the page is for, scrolling content."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QGroupBox,
    QLabel,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)


class Page(QWidget):
    """A sidebar page. Subclasses add widgets to ``self.body``."""

    title = ""
    subtitle = ""

    def __init__(self, scroll: bool = True) -> None:
        super().__init__()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(20, 16, 20, 12)
        heading = QLabel(self.title)
        heading.setObjectName("pageTitle")
        heading.setStyleSheet("font-size: 18pt; font-weight: 600;")
        sub = QLabel(self.subtitle)
        sub.setWordWrap(True)
        sub.setStyleSheet("color: #555;")
        outer.addWidget(heading)
        outer.addWidget(sub)
        inner = QWidget()
        self.body = QVBoxLayout(inner)
        self.body.setContentsMargins(0, 8, 0, 0)
        if scroll:
            area = QScrollArea()
            area.setWidgetResizable(True)
            area.setFrameShape(QFrame.Shape.NoFrame)
            area.setWidget(inner)
            outer.addWidget(area, 1)
        else:
            outer.addWidget(inner, 1)


def group(title: str) -> tuple[QGroupBox, QFormLayout]:
    """A titled box with a two-column form inside."""
    box = QGroupBox(title)
    form = QFormLayout(box)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return box, form


def hint(text: str = "") -> QLabel:
    """A small grey line under a control that explains the current choice."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setStyleSheet("color: #666; font-size: 9pt;")
    return label
