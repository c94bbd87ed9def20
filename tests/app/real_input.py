"""Real input for app tests: clicks, keys and wheel turns through QTest and the window system."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QWidget


def click(widget: QWidget, pos: QPoint | None = None) -> None:
    QTest.mouseClick(widget, Qt.MouseButton.LeftButton, pos=pos or widget.rect().center())


def click_sidebar(window, name: str) -> None:
    """Click the sidebar entry whose label ends with ``name``."""
    bar = window.sidebar
    item = next(bar.item(i) for i in range(bar.count()) if bar.item(i).text().endswith(name))
    click(bar.viewport(), bar.visualItemRect(item).center())


def wheel(window, widget: QWidget, notches: int = -1) -> None:
    """A wheel turn over the middle of ``widget`` (negative: scroll down)."""
    pos = widget.mapTo(window, widget.rect().center())
    QTest.wheelEvent(window.windowHandle(), QPointF(pos), QPoint(0, 120 * notches))
    QTest.qWait(20)


def focus(qtbot, window, widget: QWidget) -> None:
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5_000)
    click(widget, QPoint(8, widget.height() // 2))
    qtbot.waitUntil(widget.hasFocus, timeout=5_000)


def type_into(qtbot, window, control, text: str) -> None:
    """Click into a NumberControl's box, replace its text and press Enter, as a user does."""
    edit = control.spin.lineEdit()
    scroll = getattr(window.current_page(), "scroll_area", None)
    if scroll is not None:
        scroll.ensureWidgetVisible(control)
    focus(qtbot, window, edit)
    QTest.keyClick(edit, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClicks(edit, text)
    QTest.keyClick(edit, Qt.Key.Key_Return)


def controls(window) -> dict:
    """Every NumberControl of the window by (section, name)."""
    kind = type(window.training_page.lr)
    return {(c.section, c.name): c for c in window.findChildren(kind)}
