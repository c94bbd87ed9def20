"""Broken datasets: curated faults plus a few hundred seeded mutants of valid files.

Each goes through read_dataset, inspect_dataset (with the real tokenizer) and prepare_data.
Only DatasetError may escape; every problem names its file, and its line unless it is about
the whole file; the file and its folder are byte-identical afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import DataSpec
from engine.data import DatasetError, inspect_dataset, prepare_data, read_dataset
from tests.reliability.conftest import snapshot
from tests.reliability.mutate import mutants
from tests.reliability.seeds import ALPACA, CHAT, SHAREGPT, seed_files

FUZZ_SEED = 20261128
PER_SEED = 30  # 11 seeds -> 330 mutants
# Problems about a whole file or folder have no line to name.
FILE_LEVEL = (
    "the file is empty", "no record has a known key", "no trainable records",
    "too few records", "a JSON array of", "unknown file type", "no such file",
    "cannot read the file", "a .txt file is plain text", "no train file", "more than one",
)  # fmt: skip
HUGE = 10 * 2**20 + 16  # just over engine.data's MAX_LINE_BYTES


def _line(rows: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


GOOD = ALPACA[0]
# name -> (bytes, a text that must appear in some problem)
CURATED: dict[str, tuple[bytes, str]] = {
    "empty.jsonl": (b"", "the file is empty"),
    "empty.json": (b"", "the file is empty"),
    "empty.txt": (b"", "the file is empty"),
    "blank.jsonl": (b"\n  \n\r\n", "the file is empty"),
    "not-utf8.jsonl": (_line([GOOD]).replace(b"apple", b"app\xffle"), "not UTF-8"),
    "not-utf8.json": (b'[{"text": "caf\xe9"}]', "not UTF-8"),
    "not-utf8.txt": (b"one\n\ntw\xc3o\n", "not UTF-8"),
    "array-in.jsonl": (json.dumps(ALPACA, indent=1).encode(), "holds one JSON array"),
    "multiline.jsonl": (_line([GOOD]) + json.dumps(GOOD, indent=2).encode(), "spread over lines"),
    "syntax.jsonl": (b'{"text": "a",}\n{"text": "b"\n', "not valid JSON"),
    "syntax.json": (b'[{"text": "a"}, {"text": }]', "not valid JSON"),
    "open-array.json": (b'[{"text": "a"},', "not valid JSON"),
    "missing-field.jsonl": (_line([{"instruction": "x"}]), "output: missing"),
    "mistyped.jsonl": (_line([{"instruction": 3, "output": "x"}]), "expected a string"),
    "unknown-role.jsonl": (
        _line(
            [
                {
                    "messages": [
                        {"role": "robot", "content": "x"},
                        {"role": "assistant", "content": "y"},
                    ]
                }
            ]
        ),
        'got "robot"',
    ),
    "sharegpt-order.jsonl": (
        _line(
            [{"conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]}]
        ),
        "must start with a human turn",
    ),
    "empty-answer.jsonl": (_line([{"instruction": "x", "output": ""}]), "empty assistant turn"),
    "mixed.jsonl": (_line([*ALPACA, CHAT[0], SHAREGPT[0]]), "mixed formats"),
    "not-objects.jsonl": (_line([GOOD, GOOD]) + b'[1, 2]\n"s"\nnull\n', "expected a JSON object"),
    "unknown-keys.jsonl": (_line([{"foo": 1}, {"bar": 2}]), "no record has a known key"),
    "huge-line.jsonl": (b'{"text": "' + b"a" * HUGE + b'"}\n' + _line([GOOD]), "the limit is"),
    "bom-only.jsonl": (b"\xef\xbb\xbf", "the file is empty"),
    "nul.jsonl": (b"\x00" * 64, "not valid JSON"),
    "lone-surrogate.jsonl": (b'{"text": "\\ud800"}\n', "surrogate"),
    "nan.jsonl": (b'{"text": NaN}\n', "expected a string"),
    "tools-not-json.jsonl": (
        _line([{**SHAREGPT[0], "tools": "[{not json"}]),
        "tools: a string that is not valid JSON",
    ),
    "unknown.csv": (b"a,b\n1,2\n", "unknown file type"),
}


def _problems_of(path: Path, tok) -> tuple[list, list[str]]:
    """Run the three entry points; return every problem seen and any exception that escaped."""
    seen, escaped = [], []
    try:
        seen += read_dataset(path).problems.kept
        seen += inspect_dataset(str(path), tokenizer=tok, max_seq_len=64).problems.kept
        prepare_data(DataSpec(path=str(path), max_seq_len=64), tok, seed=0)
    except DatasetError as e:
        seen += e.problems
    except Exception as e:  # noqa: BLE001 - the point: name what escaped, for every file
        escaped.append(f"{path.name}: {type(e).__name__}: {str(e)[:200]}")
    return seen, escaped


def _faults(path: Path, tok) -> list[str]:
    """Everything wrong with how ``path`` was handled (empty when all is well)."""
    before = snapshot(path.parent)
    seen, out = _problems_of(path, tok)
    for p in seen:
        if p.file != str(path):
            out.append(f"{path.name}: problem names {p.file!r}, not the file: {p}")
        if p.line is None and not p.message.startswith(FILE_LEVEL):
            out.append(f"{path.name}: problem without a line: {p}")
    if snapshot(path.parent) != before:
        out.append(f"{path.name}: the folder changed: {snapshot(path.parent)} vs {before}")
    return out


def _write(root: Path, name: str, data: bytes) -> Path:
    folder = root / name.replace(".", "_")
    folder.mkdir()
    path = folder / name
    path.write_bytes(data)
    return path


def test_seeds_are_valid(tmp_path, tok):
    for name, data in seed_files().items():
        path = _write(tmp_path, name, data)
        r = read_dataset(path)
        assert r.ok and r.problems.total == 0 and r.records, (name, r.problems.lines())
        assert prepare_data(DataSpec(path=str(path), max_seq_len=64), tok, seed=0).train


@pytest.mark.parametrize("name", sorted(CURATED))
def test_curated_fault_is_named_and_changes_nothing(tmp_path, tok, name):
    data, needle = CURATED[name]
    path = _write(tmp_path, name, data)
    assert _faults(path, tok) == []
    seen, _ = _problems_of(path, tok)
    assert any(needle in str(p) for p in seen), [str(p) for p in seen]


def test_seeded_mutants_never_escape_and_change_nothing(tmp_path, tok):
    cases = mutants(seed_files(), PER_SEED, FUZZ_SEED)
    assert len(cases) >= 300
    faults: list[str] = []
    broken = 0
    for name, data in cases:
        path = _write(tmp_path, name, data)
        faults += _faults(path, tok)
        broken += not read_dataset(path).ok
    assert faults == []
    assert broken > len(cases) // 3  # the corpus really is mostly broken, not a no-op


def test_a_folder_of_broken_splits_changes_nothing(tmp_path, tok):
    (tmp_path / "train.jsonl").write_bytes(CURATED["syntax.jsonl"][0])
    (tmp_path / "valid.json").write_bytes(CURATED["open-array.json"][0])
    (tmp_path / "test.txt").write_bytes(b"\xff\n")
    before = snapshot(tmp_path)
    r = read_dataset(tmp_path)
    assert {Path(p.file).name for p in r.problems.kept} == {"train.jsonl", "valid.json", "test.txt"}
    with pytest.raises(DatasetError):
        prepare_data(DataSpec(path=str(tmp_path)), tok, seed=0)
    assert snapshot(tmp_path) == before


DEEP = 100_000
ESCAPES = {
    "deep-array.jsonl": b"[" * DEEP + b"]" * DEEP + b"\n",
    "deep-array.json": b"[" * DEEP + b"]" * DEEP,
    "deep-field.jsonl": b'{"text": ' + b"[" * DEEP + b"]" * DEEP + b"}\n",
    "deep-multiline.json": b'{"text":\n' + b"[" * DEEP + b"]" * DEEP + b"\n}\n",
    "long-int.jsonl": b'{"text": 1' + b"0" * 5000 + b"}\n",
    "deep-tools.jsonl": _line([{**SHAREGPT[0], "tools": "[" * DEEP + "]" * DEEP}]),
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_pathological_json_is_a_problem_not_an_exception(tmp_path, tok, name):
    path = _write(tmp_path, name, ESCAPES[name])
    assert _faults(path, tok) == []
