"""Why Start refused a run (engine/preflight.py), with one button per fix that fits."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QLabel, QPushButton, QSizePolicy, QVBoxLayout

from engine.preflight import PreflightResult, Suggestion

STYLES = {
    "error": "#preflight { background:#fdecea; border:1px solid #f5c6cb; border-radius:4px; }",
    "info": "#preflight { background:#e8f4fd; border:1px solid #b3d7f5; border-radius:4px; }",
}


class PreflightPanel(QFrame):
    """Hidden until a refusal; ``apply_requested(Suggestion)`` when a fix's button is pressed."""

    apply_requested = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("preflight")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.PlainText)  # paths may hold < and &
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # a long path in the message must wrap, never widen the window
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(10, 8, 10, 8)
        self.layout_.addWidget(self.label)
        self.buttons: list[QPushButton] = []
        self.hide()

    def show_result(self, result: PreflightResult, can_apply: bool = True) -> None:
        """The refusal, and a button per suggestion (none when ``can_apply`` is false: a
        resumed run keeps the settings it was started with)."""
        self._clear_buttons()
        self.setStyleSheet(STYLES["error"])
        self.label.setText(result.summary())
        if result.suggestions and can_apply:
            heading = QLabel("What fits instead (the estimate says each of these fits):")
            self._add(heading)
            for s in result.suggestions:
                button = QPushButton(f"Apply: {s.title}")
                button.setToolTip(f"Needs {s.detail}\n--set " + " --set ".join(s.set_args()))
                button.clicked.connect(lambda _=False, s=s: self.apply_requested.emit(s))
                self._add(button)
        self.show()

    def show_applied(self, suggestion: Suggestion) -> None:
        self._clear_buttons()
        self.setStyleSheet(STYLES["info"])
        self.label.setText(
            f"Applied: {suggestion.title}. The settings below show it; press Start training."
        )
        self.show()

    def _add(self, widget: QLabel | QPushButton) -> None:
        self.layout_.addWidget(widget, 0, Qt.AlignmentFlag.AlignLeft)
        self.buttons.append(widget)  # type: ignore[arg-type]

    def _clear_buttons(self) -> None:
        for w in self.buttons:
            w.deleteLater()
        self.buttons = []

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""
