"""File-level faults: each is named with its file, line (and column or byte), never a traceback."""

from __future__ import annotations

import hashlib
import json

from engine.data import read_dataset
from tests.data.conftest import write_jsonl

GOOD = {"instruction": "Tell me about Pip.", "input": "", "output": "Pip is a robot."}


def _msgs(result) -> list[str]:
    return [str(p) for p in result.problems.kept]


def test_empty_file(tmp_path):
    for name in ("train.jsonl", "train.json", "train.txt"):
        (tmp_path / name).write_bytes(b"")
        r = read_dataset(tmp_path / name)
        assert _msgs(r) == [f"{tmp_path / name}: the file is empty"]
    (tmp_path / "blank.jsonl").write_text("\n  \n\n")
    assert "the file is empty" in _msgs(read_dataset(tmp_path / "blank.jsonl"))[0]


def test_not_utf8_names_line_and_byte(tmp_path):
    p = tmp_path / "train.jsonl"
    bad = json.dumps(GOOD).encode().replace(b"Pip is", b"Pip \xff is")
    p.write_bytes(
        json.dumps(GOOD).encode() + b"\n" + bad + b"\n" + json.dumps(GOOD).encode() + b"\n"
    )
    r = read_dataset(p)
    assert len(r.records) == 2
    (msg,) = _msgs(r)
    col = bad.index(b"\xff")
    assert msg.startswith(f"{p}:2:{col + 1}: not UTF-8: byte 0xff at byte {col} of the line")
    assert f"file offset {len(json.dumps(GOOD)) + 1 + col}" in msg


def test_not_utf8_in_json_array(tmp_path):
    p = tmp_path / "train.json"
    p.write_bytes(b'[\n  {"text": "ok"},\n  {"text": "caf\xe9"}\n]')
    r = read_dataset(p)
    assert r.problems.errors == 1 and _msgs(r)[0].startswith(f"{p}:3:")
    assert "not UTF-8: byte 0xe9" in _msgs(r)[0]


def test_json_array_in_jsonl_is_read_with_a_warning(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text(json.dumps([GOOD, GOOD | {"output": "Pip likes apples."}], indent=2))
    r = read_dataset(p)
    assert len(r.records) == 2 and r.problems.errors == 0 and r.problems.warnings == 1
    assert "holds one JSON array, not JSON lines" in _msgs(r)[0]


def test_jsonl_in_a_json_file_is_accepted(tmp_path):
    p = write_jsonl(tmp_path / "train.json", [GOOD, GOOD | {"output": "Pip likes apples."}])
    r = read_dataset(p)
    assert len(r.records) == 2 and r.problems.total == 0 and r.format == "alpaca"


def test_pretty_printed_object_in_json_file_is_accepted(tmp_path):
    p = tmp_path / "train.json"
    p.write_text(json.dumps(GOOD, indent=2))
    r = read_dataset(p)
    assert len(r.records) == 1 and r.problems.total == 0


def test_object_spread_over_lines_in_jsonl(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text(
        json.dumps(GOOD) + "\n" + json.dumps(GOOD, indent=2) + "\n" + json.dumps(GOOD) + "\n"
    )
    r = read_dataset(p)
    assert len(r.records) == 2
    assert _msgs(r) == [
        f"{p}:2: one JSON object spread over lines 2-6; JSON Lines needs each record on a single line"
    ]


def test_syntax_error_has_line_and_column(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text(json.dumps(GOOD) + '\n{"instruction": "a", "output": "b",, "x": 1}\n')
    r = read_dataset(p)
    assert _msgs(r) == [
        f"{p}:2:36: not valid JSON: Expecting property name enclosed in double quotes"
    ]
    q = tmp_path / "train.json"
    q.write_text('[\n  {"text": "a"},\n  {"text": "b" "c"}\n]')
    assert _msgs(read_dataset(q)) == [f"{q}:3:16: not valid JSON: Expecting ',' delimiter"]
    q.write_text('[{"text": "a"},\n {"text": "b"},\n]')
    assert "trailing comma" in _msgs(read_dataset(q))[0]
    q.write_text('[{"text": "a"}')
    assert "not closed" in _msgs(read_dataset(q))[0]


def test_huge_line_is_refused_without_parsing(tmp_path):
    p = tmp_path / "train.jsonl"
    huge = json.dumps({"text": "a" * (11 * 2**20)})
    p.write_text(
        json.dumps({"text": "short"}) + "\n" + huge + "\n" + json.dumps({"text": "after"}) + "\n"
    )
    r = read_dataset(p)
    assert [rec.text for rec in r.records] == ["short", "after"]
    (msg,) = _msgs(r)
    assert msg.startswith(f"{p}:2: line is 11.0 MiB long; the limit is 10.0 MiB per record")


def test_huge_line_limit_is_a_parameter(tmp_path):
    p = write_jsonl(tmp_path / "train.jsonl", [{"text": "x" * 500}, {"text": "ok"}])
    r = read_dataset(p, max_line_bytes=100)
    assert len(r.records) == 1 and "line is 0.0 MiB long; the limit is 0.0 MiB" in _msgs(r)[0]


def test_bom_crlf_and_blank_lines(tmp_path):
    p = tmp_path / "train.jsonl"
    body = "\r\n".join([json.dumps({"text": "one"}), "", json.dumps({"text": "two"})]) + "\r\n"
    p.write_bytes(b"\xef\xbb\xbf" + body.encode())
    r = read_dataset(p)
    assert [rec.text for rec in r.records] == ["one", "two"] and r.problems.total == 0
    assert r.records[1].line == 3


def test_txt_is_one_record_per_paragraph(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("Pip is a robot.\nHe lives in an orchard.\n\n\nPip likes apples.\n")
    r = read_dataset(p)
    assert [(rec.line, rec.text) for rec in r.records] == [
        (1, "Pip is a robot.\nHe lives in an orchard."),
        (5, "Pip likes apples."),
    ]
    assert r.format == "text"
    r = read_dataset(p, fmt="alpaca")
    assert "a .txt file is plain text; it cannot be read as alpaca" in _msgs(r)[0]


def test_folder_with_splits(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [GOOD] * 3)
    write_jsonl(tmp_path / "validation.jsonl", [GOOD])
    (tmp_path / "test.txt").write_text("A story.\n")
    r = read_dataset(tmp_path)
    assert {k: len(v) for k, v in r.splits.items()} == {"train": 3, "valid": 1, "test": 1}
    assert r.formats == {"train": "alpaca", "valid": "alpaca", "test": "text"}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no train file" in _msgs(read_dataset(empty))[0]
    write_jsonl(tmp_path / "train.json", [GOOD])
    assert "more than one train file" in _msgs(read_dataset(tmp_path))[0]


def test_missing_path_and_unknown_suffix(tmp_path):
    assert _msgs(read_dataset(tmp_path / "nope.jsonl")) == [
        f"{tmp_path / 'nope.jsonl'}: no such file or folder"
    ]
    (tmp_path / "data.csv").write_text("a,b\n")
    assert "unknown file type '.csv'" in _msgs(read_dataset(tmp_path / "data.csv"))[0]


def test_nothing_changes_on_disk(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_bytes(b'{"text": "a"}\n{bad\n\xff\n[1, 2]\n')
    before = hashlib.sha256(p.read_bytes()).hexdigest()
    read_dataset(p)
    read_dataset(tmp_path)
    assert hashlib.sha256(p.read_bytes()).hexdigest() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["train.jsonl"]
