"""Read dataset files into raw JSON values with their line numbers, never trusting the bytes.

JSON lines are read one bounded line at a time (a line over the limit is skipped without
ever being held whole); a JSON array is read as one document capped at ``MAX_DOC_BYTES``.
A ``.jsonl`` holding one array and a ``.json`` holding JSON lines are both accepted.
A ``.txt`` file is one record per paragraph (blank-line separated), the natural unit of a story.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.data.locate import LineIndex, value_offset
from engine.data.problems import ProblemLog

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 10 * 2**20  # one record; a longer line is refused unread
MAX_DOC_BYTES = 1024 * 2**20  # a whole-file JSON array
_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


@dataclass
class RawItem:
    """One parsed value and where it came from (kept to name the column of a later problem)."""

    value: Any
    file: str
    line: int
    text: str = ""  # the JSON text the value was parsed from
    start: int = 0  # offset of the value in ``text``
    index: LineIndex | None = None

    def where(self, path: tuple[str | int, ...]) -> tuple[int, int | None]:
        if not self.text:
            return self.line, None
        off = value_offset(self.text, path, self.start)
        if off is None:
            return self.line, None
        index = self.index or LineIndex(self.text, self.line)
        return index.line_col(off)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def read_lines(
    path: Path, display: str, problems: ProblemLog, max_line_bytes: int = MAX_LINE_BYTES
) -> list[tuple[int, str]]:
    """(line number, text) of every line that is UTF-8 and within the size limit."""
    out: list[tuple[int, str]] = []
    offset = 0
    with path.open("rb") as f:
        no = 0
        while True:
            chunk = f.readline(max_line_bytes + 2)
            if not chunk:
                break
            no += 1
            start = offset
            offset += len(chunk)
            if no == 1 and chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]
            body = chunk.rstrip(b"\r\n")
            if len(body) > max_line_bytes:
                size = len(chunk)
                while not chunk.endswith(b"\n"):  # skip the rest of the line in bounded reads
                    chunk = f.readline(2**20)
                    if not chunk:
                        break
                    size += len(chunk)
                offset = start + size
                problems.error(
                    display,
                    no,
                    f"line is {_mib(size)} long; the limit is {_mib(max_line_bytes)} per record "
                    "(skipped without reading it)",
                )
                continue
            try:
                out.append((no, body.decode("utf-8")))
            except UnicodeDecodeError as e:
                problems.error(
                    display,
                    no,
                    f"not UTF-8: byte 0x{body[e.start]:02x} at byte {e.start} of the line "
                    f"(file offset {start + e.start})",
                    column=e.start + 1,
                )
    return out


def _first_char(path: Path) -> str:
    with path.open("rb") as f:
        while True:
            block = f.read(65536)
            if not block:
                return ""
            stripped = block.lstrip(b" \t\r\n\xef\xbb\xbf")
            if stripped:
                return chr(stripped[0])


def read_json_file(
    path: Path, display: str, problems: ProblemLog, max_line_bytes: int = MAX_LINE_BYTES
) -> list[RawItem]:
    """Parse a .json or .jsonl file: a JSON array, or JSON lines."""
    first = _first_char(path)
    if not first:
        problems.error(display, None, "the file is empty")
        return []
    is_jsonl = path.suffix.lower() == ".jsonl"
    if first == "[":
        if is_jsonl:
            problems.warning(
                display,
                1,
                "holds one JSON array, not JSON lines (one object per line); read it as an array",
            )
        return _read_array(path, display, problems, max_line_bytes)
    lines = read_lines(path, display, problems, max_line_bytes)
    return _parse_lines(lines, display, problems, allow_multiline=not is_jsonl)


def _read_array(path: Path, display: str, problems: ProblemLog, max_item: int) -> list[RawItem]:
    size = path.stat().st_size
    if size > MAX_DOC_BYTES:
        problems.error(
            display,
            None,
            f"a JSON array of {_mib(size)} is over the {_mib(MAX_DOC_BYTES)} limit for one "
            "document; write it as JSON lines (one record per line) instead",
        )
        return []
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1)
        problems.error(
            display,
            line,
            f"not UTF-8: byte 0x{data[e.start]:02x} at byte {col} of the line (file offset {e.start})",
            column=col + 1,
        )
        return []
    index = LineIndex(text)
    items: list[RawItem] = []
    i = _skip(text, text.index("[") + 1)
    if i < len(text) and text[i] == "]":
        problems.error(display, 1, "the JSON array is empty")
        return []
    while True:
        try:
            value, end = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError as e:
            line, col = index.line_col(e.pos)
            problems.error(display, line, f"not valid JSON: {e.msg}", column=col)
            return items
        except (RecursionError, ValueError) as e:  # nesting or integer size past Python's limits
            problems.error(display, index.line_col(i)[0], f"not readable JSON: {_limit_reason(e)}")
            return items
        line, _ = index.line_col(i)
        if len(text[i:end].encode("utf-8")) > max_item:
            problems.error(display, line, f"record is over the {_mib(max_item)} limit per record")
        else:
            items.append(RawItem(value, display, line, text, i, index))
        j = _skip(text, end)
        if j < len(text) and text[j] == ",":
            i = _skip(text, j + 1)
            if i < len(text) and text[i] == "]":
                line, col = index.line_col(j)
                problems.error(
                    display, line, "not valid JSON: trailing comma before ']'", column=col
                )
                return items
            continue
        if j < len(text) and text[j] == "]":
            k = _skip(text, j + 1)
            if k < len(text):
                line, col = index.line_col(k)
                problems.error(
                    display, line, "not valid JSON: extra data after the array", column=col
                )
            return items
        line, col = index.line_col(min(j, len(text)))
        what = "the array is not closed (missing ']')" if j >= len(text) else "expected ',' or ']'"
        problems.error(display, line, f"not valid JSON: {what}", column=col)
        return items


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _parse_lines(
    lines: list[tuple[int, str]], display: str, problems: ProblemLog, allow_multiline: bool
) -> list[RawItem]:
    items: list[RawItem] = []
    k = 0
    while k < len(lines):
        no, text = lines[k]
        if not text.strip():
            k += 1
            continue
        try:
            items.append(RawItem(json.loads(text), display, no, text, 0))
            k += 1
            continue
        except json.JSONDecodeError as e:
            error = e
        except (RecursionError, ValueError) as e:  # nesting or integer size past Python's limits
            problems.error(display, no, f"not readable JSON: {_limit_reason(e)}")
            k += 1
            continue
        spread = _spread_object(lines, k) if _incomplete(text, error) else None
        if spread is None:
            problems.error(display, no, f"not valid JSON: {error.msg}", column=error.colno)
            k += 1
            continue
        value, last, joined = spread
        if allow_multiline:
            items.append(RawItem(value, display, no, joined, 0, LineIndex(joined, no)))
        else:
            problems.error(
                display,
                no,
                f"one JSON object spread over lines {no}-{lines[last][0]}; JSON Lines needs each "
                "record on a single line",
            )
        k = last + 1
    return items


def _limit_reason(e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return f"a value past the parser's limits ({e})"


def _incomplete(text: str, e: json.JSONDecodeError) -> bool:
    """The line ended before its JSON value did (so it may continue on the next lines)."""
    return e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")


def _spread_object(lines: list[tuple[int, str]], k: int) -> tuple[Any, int, str] | None:
    """Try to read one value that starts on line ``k`` and runs over the following lines."""
    for window in (64, 1024, 16384):
        chunk = lines[k : k + window]
        if [n for n, _ in chunk] != list(range(chunk[0][0], chunk[0][0] + len(chunk))):
            chunk = chunk[: next(i for i in range(1, len(chunk)) if chunk[i][0] != chunk[0][0] + i)]
        joined = "\n".join(t for _, t in chunk)
        try:
            value, end = _DECODER.raw_decode(joined, _skip(joined, 0))
        except (json.JSONDecodeError, RecursionError, ValueError):
            if len(chunk) < window:
                return None
            continue
        last = k + joined.count("\n", 0, end)
        if last == k:
            return None
        return value, last, joined[:end]
    return None


def read_text_file(
    path: Path, display: str, problems: ProblemLog, max_line_bytes: int = MAX_LINE_BYTES
) -> list[RawItem]:
    """A .txt file: one ``{"text": paragraph}`` per run of non-blank lines."""
    if path.stat().st_size == 0:
        problems.error(display, None, "the file is empty")
        return []
    items: list[RawItem] = []
    para: list[str] = []
    first = 0
    for no, text in [*read_lines(path, display, problems, max_line_bytes), (-1, "")]:
        if text.strip():
            if not para:
                first = no
            para.append(text)
        elif para:
            items.append(RawItem({"text": "\n".join(para)}, display, first))
            para = []
    if not items and not problems.errors:
        problems.error(display, None, "the file is empty (no non-blank lines)")
    return items
