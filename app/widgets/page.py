"""Common page frame: a title, one line saying what the page is for, the page's own message
strip, scrolling content."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QFormLayout,
    QFrame,
    QGroupBox,
    QLabel,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.widgets.banner import Banner
from app.widgets.text import wrapping_label


class Page(QWidget):
    """A sidebar page. Subclasses add widgets to ``self.body``.

    Each page has its own banner: a message belongs to the page it is about, so it is out of
    sight on the other pages, and the page clears it once the cause is fixed."""

    title = ""
    subtitle = ""

    def __init__(self, scroll: bool = True) -> None:
        super().__init__()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(20, 16, 20, 12)
        heading = QLabel(self.title)
        heading.setObjectName("pageTitle")
        heading.setStyleSheet("font-size: 18pt; font-weight: 600;")
        sub = wrapping_label(self.subtitle)
        sub.setStyleSheet("color: #555;")
        self.banner = Banner()
        outer.addWidget(heading)
        outer.addWidget(sub)
        outer.addWidget(self.banner)
        inner = QWidget()
        self.body = QVBoxLayout(inner)
        self.body.setContentsMargins(0, 8, 0, 0)
        self.scroll_area: QAbstractScrollArea | None = None
        if scroll:
            area = self.scroll_area = QScrollArea()
            area.setWidgetResizable(True)
            area.setFrameShape(QFrame.Shape.NoFrame)
            area.setWidget(inner)
            outer.addWidget(area, 1)
        else:
            outer.addWidget(inner, 1)

    def show_message(self, text: str, level: str = "error") -> None:
        self.banner.show_message(text, level)

    def clear_message(self, *levels: str) -> None:
        """Hide the page's message (only one of ``levels``, when given): its cause is fixed."""
        if self.banner.isVisible() and (not levels or self.banner.level in levels):
            self.banner.dismiss()


def group(title: str) -> tuple[QGroupBox, QFormLayout]:
    """A titled box with a two-column form inside."""
    box = QGroupBox(title)
    form = QFormLayout(box)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return box, form


def hint(text: str = "") -> QLabel:
    """A small grey line under a control that explains the current choice."""
    label = wrapping_label(text)
    label.setStyleSheet("color: #666; font-size: 9pt;")
    return label
