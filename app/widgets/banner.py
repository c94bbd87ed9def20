"""A non-modal message strip at the top of the window (errors, warnings, notes)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton

STYLES = {
    "error": "background:#fdecea; color:#611a15; border:1px solid #f5c6cb;",
    "warning": "background:#fff8e1; color:#5d4200; border:1px solid #ffe082;",
    "info": "background:#e8f4fd; color:#0d3c61; border:1px solid #b3d7f5;",
}


class Banner(QFrame):
    """Shows one message at a time; the close button hides it. Never blocks the window."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("banner")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, text: str, level: str = "error") -> None:
        self.setStyleSheet(f"#banner {{{STYLES.get(level, STYLES['info'])} border-radius:4px;}}")
        self.label.setText(text)
        self.level = level
        self.show()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""
