"""Find where a field sits in a record's JSON text, so a problem can name its column.

Only called for records that have a problem, so it re-scans the text instead of making the
fast path (``json.loads``) keep positions for every value.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from json.decoder import scanstring

_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def value_offset(text: str, path: tuple[str | int, ...], start: int = 0) -> int | None:
    """Offset of the value at ``path`` (keys and list indexes) in the JSON value at ``start``.

    Returns the deepest offset found when the path runs out early (e.g. a missing key gives
    the offset of its parent object), or None if the text cannot be scanned.
    """
    i = _skip_ws(text, start)
    try:
        for step in path:
            found = _child(text, i, step)
            if found is None:
                return i
            i = found
    except (ValueError, IndexError):
        return None
    return i


def _child(text: str, i: int, step: str | int) -> int | None:
    if i >= len(text):
        return None
    if text[i] == "{" and isinstance(step, str):
        i = _skip_ws(text, i + 1)
        while i < len(text) and text[i] != "}":
            key, i = scanstring(text, i + 1)
            i = _skip_ws(text, i)
            i = _skip_ws(text, i + 1)  # the colon
            if key == step:
                return i
            _, i = _DECODER.raw_decode(text, i)
            i = _skip_ws(text, i)
            if i < len(text) and text[i] == ",":
                i = _skip_ws(text, i + 1)
        return None
    if text[i] == "[" and isinstance(step, int):
        i = _skip_ws(text, i + 1)
        n = 0
        while i < len(text) and text[i] != "]":
            if n == step:
                return i
            _, i = _DECODER.raw_decode(text, i)
            i = _skip_ws(text, i)
            if i < len(text) and text[i] == ",":
                i = _skip_ws(text, i + 1)
            n += 1
        return None
    return None


class LineIndex:
    """Maps character offsets in a text to 1-based (line, column)."""

    def __init__(self, text: str, first_line: int = 1):
        self.starts = [0]
        self.first_line = first_line
        pos = text.find("\n")
        while pos != -1:
            self.starts.append(pos + 1)
            pos = text.find("\n", pos + 1)

    def line_col(self, offset: int) -> tuple[int, int]:
        k = bisect_right(self.starts, offset) - 1
        return self.first_line + k, offset - self.starts[k] + 1


def field_name(path: tuple[str | int, ...]) -> str:
    """``("conversations", 2, "from")`` -> ``conversations[2].from``."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out or "record"
