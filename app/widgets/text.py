"""Labels that never widen the window, whatever text they are given.

A QLabel asks its layout for the width of its longest unbreakable word, so one long path or
a worker's hashed cache path in an error message used to push the window past the screen
(1200 -> 2358 px), and it could not be made narrower again. Paths are elided instead (the
whole path in the tooltip); free text gets break opportunities inside long words.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

ZWSP = "\u200b"  # zero-width space: an invisible place where a line may break
LONG_WORD = 24
_BREAK_AFTER = re.compile(r"([/\\_.:,=-])")


def breakable(text: str) -> str:
    """``text`` with invisible break points inside words longer than LONG_WORD characters."""

    def soften(match: re.Match[str]) -> str:
        word = _BREAK_AFTER.sub(r"\1" + ZWSP, match.group(0))
        pieces = [
            p[i : i + LONG_WORD] for p in word.split(ZWSP) for i in range(0, len(p), LONG_WORD)
        ]
        return ZWSP.join(pieces)

    return re.sub(rf"\S{{{LONG_WORD + 1},}}", soften, text)


def breakable_html(text: str) -> str:
    """Plain ``text`` escaped for a rich-text label, with the same break points."""
    return html.escape(breakable(text)).replace("\n", "<br>")


def home_path(path: str) -> str:
    """``path`` as its owner reads it: ``~/Orchard/runs`` for a folder in the home folder
    (what a shell prompt says), else as it is. For display only; the app keeps full paths."""
    home = str(Path.home()).rstrip("/")
    if home and (path == home or path.startswith(home + "/")):
        return "~" + path[len(home) :]
    return path


def wrapping_label(text: str = "", parent: QWidget | None = None) -> QLabel:
    """A word-wrapped label whose width comes from the layout, never from its text."""
    label = QLabel(text, parent)
    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.setMinimumWidth(0)
    return label


class ElidedLabel(QLabel):
    """One line that shows as much of its text as fits (``…`` in the middle for paths, at the
    end for prose) and the whole text in its tooltip."""

    def __init__(self, text: str = "", mode: Qt.TextElideMode = Qt.TextElideMode.ElideMiddle):
        super().__init__()
        self.mode = mode
        self._full = ""
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(40)
        self.set_full_text(text)

    def set_full_text(self, text: str) -> None:
        self._full = text
        self.setToolTip(text)
        self._elide()

    def full_text(self) -> str:
        return self._full

    def setText(self, text: str) -> None:  # noqa: N802 - Qt override: callers set the full text
        self.set_full_text(text)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        line = " ".join(self._full.split())  # one line: newlines would grow it downwards
        super().setText(self.fontMetrics().elidedText(line, self.mode, max(1, self.width())))
