"""A record rendered as the model sees it: trained tokens bold green, masked ones grey."""

from __future__ import annotations

import html
from collections.abc import Iterable

from PySide6.QtWidgets import QTextBrowser

TRAINED_STYLE = "color:#1b5e20; font-weight:600; background:#e8f5e9;"
MASKED_STYLE = "color:#8a8a8a;"
LEGEND = (
    f"<span style='{TRAINED_STYLE}'>trained (the model learns to write this)</span> &nbsp; "
    f"<span style='{MASKED_STYLE}'>masked (context only, no loss)</span>"
)


def segments_html(segments: Iterable[tuple[str, bool]]) -> str:
    """(text, trained) runs -> HTML with whitespace kept."""
    parts = []
    for text, trained in segments:
        style = TRAINED_STYLE if trained else MASKED_STYLE
        body = html.escape(text).replace("\n", "<br>")
        parts.append(f"<span style='{style}'>{body}</span>")
    return "<div style='font-family:monospace; white-space:pre-wrap;'>" + "".join(parts) + "</div>"


class RecordView(QTextBrowser):
    def __init__(self) -> None:
        super().__init__()
        self.setOpenExternalLinks(False)
        self.setPlaceholderText("Select a record to see it as the model sees it.")

    def show_segments(
        self, title: str, segments: Iterable[tuple[str, bool]], note: str = ""
    ) -> None:
        note_html = f"<p style='color:#666'>{html.escape(note)}</p>" if note else ""
        self.setHtml(
            f"<p><b>{html.escape(title)}</b></p><p style='font-size:9pt'>{LEGEND}</p>"
            f"{note_html}{segments_html(segments)}"
        )

    def show_source(self, title: str, lines: list[tuple[int, str]], focus: int | None) -> None:
        """Raw lines of a file around a problem, the problem line highlighted."""
        rows = []
        for number, text in lines:
            mark = "background:#fdecea;" if number == focus else ""
            rows.append(
                f"<span style='color:#999'>{number:>6} </span>"
                f"<span style='{mark}'>{html.escape(text)}</span>"
            )
        self.setHtml(
            f"<p><b>{html.escape(title)}</b></p>"
            "<div style='font-family:monospace; white-space:pre;'>" + "<br>".join(rows) + "</div>"
        )
