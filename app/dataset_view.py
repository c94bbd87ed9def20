"""Everything the Dataset page shows, computed on a worker thread from engine/data.

The engine does the work (reading, checking, tokenizing, statistics, previews); this only
gathers it for one page and caches the tokenizer so a settings change re-runs quickly.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_lm.utils import load_tokenizer

from engine.config import JobSpec, resolve_data_path
from engine.data import DatasetReadResult, DataStats, preview_record, read_dataset
from engine.data.inspect import inspect_dataset
from engine.data.prepare import split_records
from engine.data.problems import WARNING, Problem
from engine.data.records import Record
from engine.data.templates import TemplateError
from engine.model.inspect import read_config
from engine.model.load import resolve_model_dir

PREVIEW_RECORDS = 100
SOURCE_CONTEXT = 3  # lines shown either side of a problem line

_tokenizers: dict[str, Any] = {}
_lock = threading.Lock()


@dataclass
class Preview:
    title: str
    file: str
    line: int
    segments: list[tuple[str, bool]]
    note: str = ""


@dataclass
class DatasetView:
    path: str
    read: DatasetReadResult
    stats: DataStats | None
    max_seq_len: int
    template: str | None = None
    split: tuple[int, int] | None = None  # train/valid counts when valid is split off
    previews: list[Preview] = field(default_factory=list)
    note: str = ""
    duplicates: list[Problem] = field(default_factory=list)  # the first ones, as warnings
    duplicate_count: int = 0


def tokenizer_for(model_path: str, trust_remote_code: bool = False) -> Any:
    """The model's tokenizer, loaded once per path (the page re-runs on every setting change)."""
    with _lock:
        if model_path not in _tokenizers:
            folder = resolve_model_dir(model_path)
            config = read_config(folder)  # same arguments as engine.model.load_model
            extra = {"trust_remote_code": True} if trust_remote_code else {}
            _tokenizers[model_path] = load_tokenizer(
                folder, extra, eos_token_ids=config.get("eos_token_id")
            )
        return _tokenizers[model_path]


def _title(index: int, record: Any) -> str:
    if record.is_text:
        text = record.text or ""
    else:
        first = next(
            (m for m in record.messages if m.get("role") == "user"),
            record.messages[0] if record.messages else {},
        )
        text = str(first.get("content", ""))
    text = " ".join(text.split())
    return f"{index + 1}. {text[:48]}{'…' if len(text) > 48 else ''}"


def duplicate_problems(records: list[Record], limit: int) -> tuple[list[Problem], int]:
    """Records that repeat an earlier one exactly (the engine's ``Record.key``, the same test
    its duplicate count uses), as warnings naming the first copy; the first ``limit`` of them
    and how many there are."""
    first: dict[str, Record] = {}
    found: list[Problem] = []
    count = 0
    for record in records:
        key = record.key()
        original = first.setdefault(key, record)
        if original is record:
            continue
        count += 1
        if len(found) < limit:
            where = (
                f"line {original.line}"
                if original.file == record.file
                else f"{Path(original.file).name}:{original.line}"
            )
            found.append(
                Problem(
                    record.file, record.line, None, None, f"exact duplicate of {where}", WARNING
                )
            )
    return found, count


def load_dataset_view(job: JobSpec) -> DatasetView:
    """Read + check + tokenize the job's dataset with the job's model tokenizer (worker thread)."""
    data = job.data
    note = ""
    try:
        tokenizer = tokenizer_for(job.model.path, job.model.trust_remote_code)
    except Exception as e:  # noqa: BLE001 - the dataset still gets read and checked without it
        tokenizer = None
        note = f"Token counts need the model's tokenizer, which could not be loaded: {e}"
    report = inspect_dataset(
        data.path, data.format, tokenizer, data.max_seq_len, data.max_problems, data.mask_prompt
    )
    read = read_dataset(resolve_data_path(data.path), data.format, data.max_problems)
    read.problems = report.problems  # the report's log also holds tokenization problems
    view = DatasetView(
        path=data.path,
        read=read,
        stats=report.stats,
        max_seq_len=data.max_seq_len,
        template=report.template,
        note=note,
    )
    view.duplicates, view.duplicate_count = duplicate_problems(
        read.splits.get("train", []), data.max_problems
    )
    if "valid" not in read.splits and not data.valid_path and read.records:
        train, valid = split_records(read.records, data.valid_fraction, job.run.seed)
        view.split = (len(train), len(valid))
    if tokenizer is not None:
        for i, record in enumerate(itertools.islice(read.records, PREVIEW_RECORDS)):
            try:
                segments = preview_record(record, tokenizer, data.mask_prompt, data.max_seq_len)
                extra = ""
            except TemplateError as e:
                segments, extra = [], str(e)
            view.previews.append(
                Preview(_title(i, record), record.file, record.line, segments, extra)
            )
    return view


def read_source_lines(file: str, line: int, context: int = SOURCE_CONTEXT) -> list[tuple[int, str]]:
    """Lines ``line - context .. line + context`` of a text file (worker thread)."""
    out = []
    with open(Path(file), encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, start=1):
            if number > line + context:
                break
            if number >= line - context:
                out.append((number, text.rstrip("\n")[:400]))
    return out
