"""A non-modal message strip at the top of a page (errors, warnings, notes).

A message can be anything an engine or a worker said, including one unbroken 2,000-character
path, so the strip never asks the window for width: it shows the first lines elided to the
width it is given, and a Details button opens the whole text in a wrapped, scrolling box.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QResizeEvent, QTextOption
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
)

STYLES = {
    "error": "background:#fdecea; color:#611a15; border:1px solid #f5c6cb;",
    "warning": "background:#fff8e1; color:#5d4200; border:1px solid #ffe082;",
    "info": "background:#e8f4fd; color:#0d3c61; border:1px solid #b3d7f5;",
}
SUMMARY_LINES = 2  # lines shown before "Details"
DETAILS_HEIGHT = 160
INFO_SECONDS = 12  # a note goes away by itself; errors and warnings stay until dismissed or fixed


def summary_lines(text: str, limit: int = SUMMARY_LINES) -> tuple[list[str], bool]:
    """The first ``limit`` non-empty lines of ``text`` and whether anything was left out."""
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    return lines[:limit], len(lines) > limit


class _Summary(QLabel):
    """The strip's text; it re-elides whenever its own width changes (a button beside it
    that changes its text changes the label's width, not the strip's)."""

    def __init__(self, on_resize: Callable[[], None]):
        super().__init__()
        self.on_resize = on_resize

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self.on_resize()


class Banner(QFrame):
    """Shows one message at a time; the close button hides it. Never blocks the window."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("banner")
        self.level = ""
        self._text = ""
        self.label = _Summary(self._elide)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # Ignored: the label takes the width it is given and never asks for more.
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.details_button = QToolButton()
        self.details_button.setText("Details")
        self.details_button.setCheckable(True)
        self.details_button.setAutoRaise(True)
        self.details_button.toggled.connect(self._toggle_details)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.dismiss)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.details.setMaximumHeight(DETAILS_HEIGHT)
        self.details.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.details.hide()
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.label, 1)
        row.addWidget(self.details_button, 0, Qt.AlignmentFlag.AlignTop)
        row.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 4, 6, 4)
        layout.addLayout(row)
        layout.addWidget(self.details)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Maximum)
        self._expire = QTimer(self, singleShot=True, interval=INFO_SECONDS * 1000)
        self._expire.timeout.connect(lambda: self.level == "info" and self.dismiss())
        self.hide()

    def show_message(self, text: str, level: str = "error") -> None:
        self.setStyleSheet(f"#banner {{{STYLES.get(level, STYLES['info'])} border-radius:4px;}}")
        self.level, self._text = level, text
        self.details.setPlainText(text)
        self.details_button.setChecked(False)
        self.show()
        self._elide()
        if level == "info":
            self._expire.start()
        else:
            self._expire.stop()

    def dismiss(self) -> None:
        self._expire.stop()
        self.details_button.setChecked(False)
        self.hide()

    def text(self) -> str:
        """The whole message while it is shown, else ''."""
        return self._text if self.isVisible() else ""

    def shown_text(self) -> str:
        """What the strip itself shows (the summary)."""
        return self.label.text()

    def _elide(self) -> None:
        lines, more = summary_lines(self._text)
        metrics = self.label.fontMetrics()
        width = max(40, self.label.width())
        shown = [metrics.elidedText(line, Qt.TextElideMode.ElideRight, width) for line in lines]
        cut = more or any(s != line for s, line in zip(shown, lines, strict=True))
        self.label.setText("\n".join(shown))
        self.label.setToolTip("" if not cut else "Details shows the whole message")
        self.details_button.setVisible(cut or self.details_button.isChecked())

    def _toggle_details(self, on: bool) -> None:
        self.details.setVisible(on)
        self.details_button.setText("Hide details" if on else "Details")
