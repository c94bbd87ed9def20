"""The wheel scrolls the page; it changes a control only once that control has focus.

Qt lets a spin box, slider or combo box take every wheel event that passes over it, so
scrolling a long page changed the learning rate and the batch size under the pointer
without the user noticing. Guarded controls take focus by click or Tab only, and hand a
wheel event they get while unfocused to the scroll area they sit in.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QAbstractScrollArea, QApplication, QWidget


def scroll_area_of(widget: QWidget) -> QAbstractScrollArea | None:
    """The nearest scroll area that holds ``widget`` (not the widget itself)."""
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QAbstractScrollArea):
            return parent
        parent = parent.parentWidget()
    return None


class WheelGuard(QObject):
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() != QEvent.Type.Wheel or not isinstance(watched, QWidget):
            return False
        if watched.hasFocus():
            return False  # the control is what the user is working on: it takes the wheel
        area = scroll_area_of(watched)
        if area is not None and isinstance(event, QWheelEvent):
            QApplication.sendEvent(area.viewport(), event)  # as if the page itself was scrolled
        return True


_guard: WheelGuard | None = None


def guard_wheel(*widgets: QWidget) -> None:
    """Make each of ``widgets`` take the wheel only while it has focus."""
    global _guard
    if _guard is None:
        _guard = WheelGuard(QApplication.instance())
    for widget in widgets:
        widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # not WheelFocus: a wheel never focuses
        widget.installEventFilter(_guard)
