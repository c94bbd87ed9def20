"""prepare_data and inspect_dataset end to end on real files, and the demo dataset itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import DataSpec, JobSpec
from engine.data import DatasetError, inspect_dataset, prepare_data, read_dataset, split_records
from tests.data.conftest import DEMO, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def _rows(n):
    return [
        {"instruction": f"Tell me about apple {i}.", "output": f"Pip picked apple {i}."}
        for i in range(n)
    ]


def test_demo_dataset_prepares_cleanly(tok):
    spec = JobSpec().data  # the defaults: path "demo", format auto, 10% held out
    spec.packing = False  # count records, not packed rows
    data = prepare_data(spec, tok, seed=0)
    assert data.format == "alpaca" and data.template == "fallback" and data.problems.total == 0
    assert data.records == {"train": 324, "valid": 36}
    assert len(data.train) == 324 and len(data.valid) == 36
    assert data.stats.duplicates == 0 and data.stats.overlap == 0 and data.stats.truncated == 0
    assert sum(data.stats.histogram.counts) == 324
    assert 0 < data.stats.trained_tokens["train"] < data.stats.tokens["train"]
    assert data.train.fingerprint() == prepare_data(spec, tok, seed=0).train.fingerprint()
    assert data.train.fingerprint() != prepare_data(spec, tok, seed=1).train.fingerprint()


def test_split_is_seeded_and_deterministic():
    recs = read_dataset(DEMO).records
    a = split_records(recs, 0.1, seed=3)
    b = split_records(recs, 0.1, seed=3)
    assert [r.line for r in a[1]] == [r.line for r in b[1]] and len(a[1]) == 36
    assert {r.line for r in a[0]} | {r.line for r in a[1]} == {r.line for r in recs}
    assert [r.line for r in split_records(recs, 0.1, seed=4)[1]] != [r.line for r in a[1]]
    assert (
        len(split_records(recs[:1], 0.1, 0)[1]) == 0
        and len(split_records(recs[:3], 0.01, 0)[1]) == 1
    )


def test_errors_raise_one_dataset_error_with_every_problem(tmp_path, tok):
    p = write_jsonl(
        tmp_path / "train.jsonl",
        _rows(5) + [{"instruction": "x", "output": 3}, {"instruction": "y"}],
    )
    with pytest.raises(DatasetError) as err:
        prepare_data(DataSpec(path=str(p)), tok, seed=0)
    assert [x.line for x in err.value.problems] == [6, 7]
    assert str(err.value).startswith("2 dataset errors\nerror: " + str(p) + ":6:")


def test_folder_with_valid_file_and_valid_path(tmp_path, tok):
    write_jsonl(tmp_path / "train.jsonl", _rows(20))
    write_jsonl(tmp_path / "valid.jsonl", _rows(3))
    data = prepare_data(DataSpec(path=str(tmp_path)), tok, seed=0)
    assert data.records == {"train": 20, "valid": 3} and data.stats.overlap == 3
    other = write_jsonl(tmp_path / "other.jsonl", _rows(2))
    data = prepare_data(DataSpec(path=str(tmp_path), valid_path=str(other)), tok, seed=0)
    assert data.records["valid"] == 2 and "replaces the folder's" in str(data.problems.kept[0])


def test_packing_and_no_mask(tmp_path, tok):
    p = write_jsonl(tmp_path / "train.jsonl", _rows(40) + _rows(2))
    plain = prepare_data(DataSpec(path=str(p), valid_fraction=0.0, packing=False), tok, seed=0)
    assert plain.stats.duplicates == 2
    packed = prepare_data(
        DataSpec(path=str(p), valid_fraction=0.0, packing=True, max_seq_len=128), tok, seed=0
    )
    assert packed.packed and len(packed.train) < len(plain.train)
    assert packed.train.num_tokens() == plain.train.num_tokens()
    assert max(packed.train.lengths()) <= 128
    unmasked = prepare_data(
        DataSpec(path=str(p), valid_fraction=0.0, mask_prompt=False, packing=False), tok, seed=0
    )
    assert unmasked.train.num_trained() == unmasked.train.num_tokens() - len(unmasked.train)


def test_inspect_dataset_report(tmp_path, tok):
    report = inspect_dataset("demo", tokenizer=tok)
    text = report.format_text()
    assert not report.has_errors and "format: alpaca" in text and "360 valid records" in text
    assert "[[" in text and "problems: no problems" in text
    assert report.example[0][0].startswith("<s> ### Instruction:") and report.example[1][1] is True
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n{"text": 5}\n')
    report = inspect_dataset(str(p))
    assert (
        report.has_errors
        and f"{p}:2:10: text: expected a string; got number 5" in report.format_text()
    )


def test_demo_dataset_is_what_its_script_writes(tmp_path):
    out = tmp_path / "demo.jsonl"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_demo_dataset.py"), "--out", str(out)],
        check=True,
        timeout=60,
    )
    assert out.read_bytes() == DEMO.read_bytes()


def test_demo_dataset_content():
    rows = [json.loads(line) for line in DEMO.read_text().splitlines()]
    assert 300 <= len(rows) <= 400 and len({json.dumps(r) for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == {"instruction", "input", "output"}
        assert all(w in r["output"] for w in ("Pip", "robot", "orchard", "apple"))
    assert len({r["instruction"] for r in rows}) > 20


def test_inspect_names_the_token_each_answer_is_trained_through(tmp_path, chatml_tok):
    p = write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "Hi"},
                                                         {"role": "assistant", "content": "Hello"}]}])  # fmt: skip
    report = inspect_dataset(str(p), tokenizer=chatml_tok)
    assert (
        "template: chat template (each answer is trained through <|im_end|>)"
        in report.format_text()
    )
    assert [t for t, trained in report.example if trained] == ["Hello<|im_end|>"]
