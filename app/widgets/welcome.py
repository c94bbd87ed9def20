"""The first-run welcome: what is ready, what to press, where the results go."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QTextDocumentFragment
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from app.widgets.text import breakable_html, wrapping_label

STYLE = """
QFrame#welcome { background:#f1f8e9; border:1px solid #c5e1a5; border-radius:6px; }
QFrame#welcome QLabel { background: transparent; }
"""


def welcome_html(steps: int, workers: int, runs_folder: str) -> str:
    return (
        "<p>Everything for a first run is ready. This computer is the cluster "
        f"({workers} worker process{'es' if workers != 1 else ''}), with the bundled "
        "<b>demo model</b> (TinyStories-260K: a tiny story model, <i>not</i> an assistant) and "
        "the <b>demo dataset</b> (short questions and stories about Pip, a robot in an apple "
        "orchard).</p>"
        f"<p>Press <b>Start training</b> (bottom left, or Ctrl+R) to train it for {steps} steps. "
        "<b>Monitor</b> shows the run live; then <b>Results</b> puts the model with and without "
        "your adapter side by side. Drop your own dataset anywhere on this window to train on "
        f"it instead.</p><p style='color:#555'>Runs are saved in {breakable_html(runs_folder)}.</p>"
    )


class WelcomeCard(QFrame):
    """Shown on the first launch until it is dismissed or a run starts."""

    start_requested = Signal()
    dismissed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("welcome")
        self.setStyleSheet(STYLE)
        title = QLabel("Welcome to Orchard")
        title.setStyleSheet("font-size: 14pt; font-weight: 600; color:#1b5e20;")
        self.text = wrapping_label()
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.start_button = QPushButton("Start the demo run")
        self.start_button.setObjectName("primary")
        self.close_button = QPushButton("Look around first")
        self.start_button.clicked.connect(self.start_requested)
        self.close_button.clicked.connect(self.dismiss)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.close_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 10, 14, 10)
        layout.addWidget(title)
        layout.addWidget(self.text)
        layout.addLayout(buttons)

    def describe(self, steps: int, workers: int, runs_folder: str) -> None:
        self.text.setText(welcome_html(steps, workers, runs_folder))

    def plain_text(self) -> str:
        return QTextDocumentFragment.fromHtml(self.text.text()).toPlainText()

    def dismiss(self) -> None:
        self.hide()
        self.dismissed.emit()
