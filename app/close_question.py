"""The question asked when the window closes during a run: keep training, stop, or cancel."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget

KEEP, STOP, CANCEL = "keep", "stop", "cancel"
KEEP_TEXT = "Keep training in the background"
STOP_TEXT = "Stop with a checkpoint"


def close_question(parent: QWidget | None) -> QMessageBox:
    """The dialog itself (tests find its buttons by text)."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("A run is training")
    box.setText("A run is still training. Keep it going after the window closes?")
    box.setInformativeText(
        "In the background the run goes on to its end; open Orchard again to watch it. "
        "Stopping saves a checkpoint first, so Resume on the Runs page continues it later."
    )
    keep = box.addButton(KEEP_TEXT, QMessageBox.ButtonRole.AcceptRole)
    box.addButton(STOP_TEXT, QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(keep)
    box.setEscapeButton(QMessageBox.StandardButton.Cancel)
    return box


def ask_close_during_run(parent: QWidget | None) -> str:
    """KEEP, STOP or CANCEL (Escape and the title bar's close are CANCEL)."""
    box = close_question(parent)
    box.exec()
    clicked = box.clickedButton()
    text = clicked.text() if clicked is not None else ""
    return {KEEP_TEXT: KEEP, STOP_TEXT: STOP}.get(text, CANCEL)
