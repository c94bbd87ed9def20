"""Read a dataset (one file, or a folder of train/valid/test files) into normalised records."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from engine.data.detect import KEYS_HELP, SIGNATURES, choose_format, record_format
from engine.data.formats import describe, normalise
from engine.data.problems import ProblemLog
from engine.data.readers import MAX_LINE_BYTES, read_json_file, read_text_file
from engine.data.records import Record

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".json", ".txt")
SPLIT_NAMES = {
    "train": ("train",),
    "valid": ("valid", "validation", "val", "dev"),
    "test": ("test",),
}


@dataclass
class DatasetReadResult:
    """Records per split ("train", and "valid"/"test" for a folder that has them)."""

    splits: dict[str, list[Record]] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)  # split -> detected or forced format
    files: dict[str, str] = field(default_factory=dict)  # split -> file read
    problems: ProblemLog = field(default_factory=ProblemLog)

    @property
    def records(self) -> list[Record]:
        return self.splits.get("train", [])

    @property
    def format(self) -> str | None:
        found = set(self.formats.values())
        return found.pop() if len(found) == 1 else ("mixed" if found else None)

    @property
    def ok(self) -> bool:
        return self.problems.errors == 0


def find_split_files(folder: Path, problems: ProblemLog) -> dict[str, Path]:
    """train/valid/test files in a folder (train.jsonl, validation.json, test.txt, ...)."""
    found: dict[str, Path] = {}
    for split, stems in SPLIT_NAMES.items():
        hits = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and p.stem.lower() in stems and p.suffix.lower() in SUFFIXES
        )
        if len(hits) > 1:
            names = ", ".join(p.name for p in hits)
            problems.error(str(folder), None, f"more than one {split} file ({names}); keep one")
        if hits:
            found[split] = hits[0]
    if "train" not in found:
        problems.error(
            str(folder),
            None,
            "no train file in this folder (expected train.jsonl, train.json or train.txt)",
        )
    return found


def _read_items(
    path: Path, suffix: str, fmt: str, problems: ProblemLog, max_line_bytes: int
) -> list | None:
    if suffix == ".txt":
        if fmt not in ("auto", "text"):
            problems.error(
                str(path), None, f"a .txt file is plain text; it cannot be read as {fmt}"
            )
            return None
        return read_text_file(path, str(path), problems, max_line_bytes)
    return read_json_file(path, str(path), problems, max_line_bytes)


def read_file(
    path: Path, fmt: str, problems: ProblemLog, max_line_bytes: int = MAX_LINE_BYTES
) -> tuple[list[Record], str | None]:
    """Records of one file and its format. Every fault goes to ``problems``."""
    display = str(path)
    if not path.is_file():
        problems.error(display, None, "no such file")
        return [], None
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        problems.error(
            display,
            None,
            f"unknown file type {suffix or '(none)'!r}; expected .jsonl, .json or .txt",
        )
        return [], None
    try:
        items = _read_items(path, suffix, fmt, problems, max_line_bytes)
    except OSError as e:  # unreadable, vanished, a device...
        problems.error(display, None, f"cannot read the file: {e.strerror or e}")
        return [], None
    if not items:
        return [], None
    kinds = [record_format(it.value) for it in items]
    chosen = fmt if fmt != "auto" else choose_format(kinds)
    if chosen is None:
        problems.error(display, None, f"no record has a known key: expected {KEYS_HELP}")
        return [], None
    counts = Counter(kinds)
    records: list[Record] = []
    for item, kind in zip(items, kinds, strict=False):
        if fmt == "auto" and kind != chosen:
            if not isinstance(item.value, dict):
                problems.error(
                    display,
                    item.line,
                    f"expected a JSON object (one record); got {describe(item.value)}",
                )
            elif kind is None:
                got = ", ".join(sorted(item.value)) or "(none)"
                problems.error(
                    display,
                    item.line,
                    f"no known format: expected {KEYS_HELP}; got keys {got}",
                    field="record",
                )
            else:
                key = next(
                    k for name, keys in SIGNATURES if name == kind for k in keys if k in item.value
                )
                problems.error(
                    display,
                    item.line,
                    f'looks like {kind} (has "{key}") but {counts[chosen]} of {len(items)} records '
                    f"in this file are {chosen}; one file must hold one format (mixed formats)",
                    field="record",
                )
            continue
        rec = normalise(item, chosen, problems)
        if rec is not None:
            records.append(rec)
    log.info("%s: %d records, format %s", display, len(records), chosen)
    return records, chosen


def read_dataset(
    path: str | Path,
    fmt: str = "auto",
    max_problems: int = 50,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> DatasetReadResult:
    """Read and validate every record of a file or a train/valid/test folder. Never raises for bad data."""
    result = DatasetReadResult(problems=ProblemLog(max_problems))
    p = Path(path)
    if p.is_dir():
        files = find_split_files(p, result.problems)
    elif p.exists():
        files = {"train": p}
    else:
        result.problems.error(str(p), None, "no such file or folder")
        return result
    for split, file in files.items():
        records, chosen = read_file(file, fmt, result.problems, max_line_bytes)
        result.splits[split] = records
        result.files[split] = str(file)
        if chosen:
            result.formats[split] = chosen
    return result
