"""Job files: every field of every JobSpec section, fed wrong types and out-of-range values.

Each must end in a ConfigError naming ``section.key``; nothing else may escape. The bad
values are derived from the fields' own type hints and rules, so a new field is covered
the day it is added.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import tomli_w

from engine.config import ConfigError, JobSpec

ROOT = Path(__file__).resolve().parents[2]
# section name -> its dataclass, read from JobSpec itself (a new section is covered at once)
SECTIONS = {f.name: typing.get_type_hints(JobSpec)[f.name] for f in dataclasses.fields(JobSpec)}
NESTED = {"a": {"b": 1}}


def _bad_values(hint: typing.Any, meta: dict) -> list[typing.Any]:
    """Values no field of this type and rules may accept."""
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        wrong_item = [1] if item is str else ["a", True, 1.5]
        out = ["a string", 3, NESTED, [[1]], [NESTED]]
        return out + ([wrong_item] if item is str else [[x] for x in wrong_item] + [[-1]])
    wrong_type = {
        int: ["8", True, [1], 1.5, math.nan, math.inf, NESTED],
        float: ["0.5", True, [1.0], NESTED],
        bool: ["true", 1, 0.0, [True], NESTED, math.nan],
        str: [1, True, 1.5, ["a"], NESTED, math.nan],
    }[hint]
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    candidates: list[typing.Any] = []
    if hint is int:
        candidates += [-1, -(2**62), 2**62, 0, 7]
    if hint is float:
        candidates += [-1.0, -1e300, 1e300, math.nan, math.inf, -math.inf]
    if hint in (int, float) and lo is not None and hi is not None:
        candidates += [lo - 1 if hint is int else lo - abs(lo) / 2 - 1e-3, hi + 1]
    if hint is str and choices is not None:
        candidates += ["bogus", ""]

    def rejected(v: typing.Any) -> bool:
        if v != v:
            return True
        if choices is not None and v not in choices:
            return True
        return (lo is not None and v < lo) or (hi is not None and v > hi)

    out_of_range = [
        v for v in candidates if (lo, hi, choices) != (None, None, None) and rejected(v)
    ]
    return wrong_type + out_of_range


def _cases() -> list[tuple[str, str, typing.Any]]:
    cases = []
    for section, klass in SECTIONS.items():
        hints = typing.get_type_hints(klass)
        for f in dataclasses.fields(klass):
            for value in _bad_values(hints[f.name], dict(f.metadata)):
                cases.append((section, f.name, value))
    return cases


CASES = _cases()


def test_the_corpus_covers_every_field():
    covered = {(s, k) for s, k, _ in CASES}
    every = {(s, f.name) for s, k in SECTIONS.items() for f in dataclasses.fields(k)}
    assert covered == every and len(CASES) > 5 * len(every)


@pytest.mark.parametrize(
    "section, key, value", CASES, ids=[f"{s}.{k}={v!r}"[:60] for s, k, v in CASES]
)
def test_a_bad_value_is_a_config_error_naming_the_field(section, key, value):
    text = tomli_w.dumps({section: {key: value}})
    with pytest.raises(ConfigError) as e:
        JobSpec.from_toml(text)
    assert any(p.startswith(f"{section}.{key}") for p in e.value.problems), e.value.problems
    assert f"{section}.{key}" in str(e.value)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[run\nsteps = 3\n", "line 1"),
        ("[run]\nsteps = \n", "line 2"),
        ("[run]\nsteps = 3\nsteps = 4\n", "not valid TOML"),
        ("[run]\n[run]\n", "not valid TOML"),
        ('[run]\nname = "unterminated\n', "not valid TOML"),
        ("\x00", "not valid TOML"),
        ("[run]\nsteps = 0x\n", "not valid TOML"),
        ("[run.steps]\nx = 1\n", "run.steps"),
        ("run = 3\n", "run: expected a table"),
        ("steps = 3\n", "steps: unknown section"),
        ("[runn]\nsteps = 3\n", "runn: unknown section"),
        ("[run]\nstepz = 3\n", "run.stepz: unknown setting"),
        ("[lora]\nrank = 8\nalpah = 2.0\n", "lora.alpah: unknown setting"),
        ("[[run]]\nsteps = 3\n", "run: expected a table"),
    ],
)
def test_malformed_toml_and_unknown_keys(text, needle):
    with pytest.raises(ConfigError) as e:
        JobSpec.from_toml(text, source="bad.toml")
    assert needle in str(e.value)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("run.steps=-1", "run.steps"),
        ("run.steps", "expected section.key=value"),
        ("nosuch.key=1", "nosuch.key: unknown setting"),
        ("lora.rank={a=1}", "lora.rank"),
        ("optim.learning_rate=nan", "optim.learning_rate"),
        ("dist.hosts=[1]", "dist.hosts"),
    ],
)
def test_overrides_are_checked_the_same_way(override, needle):
    with pytest.raises(ConfigError) as e:
        JobSpec().with_overrides([override])
    assert needle in str(e.value)


def _cli_train(job: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.main", "train", str(job)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip


@pytest.mark.timeout(120)
def test_cli_exits_2_with_the_message_and_no_traceback(tmp_path):
    cases = {
        "range.toml": ("[run]\nsteps = 0\n", "run.steps"),
        "type.toml": ('[lora]\nrank = "8"\n', "lora.rank"),
        "syntax.toml": ("[run\n", "not valid TOML"),
        "unknown.toml": ("[dist]\nworkerz = 2\n", "dist.workerz"),
        "binary.toml": ("\udcff", "not UTF-8"),
    }
    for name, (text, needle) in cases.items():
        path = tmp_path / name
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        done = _cli_train(path)
        assert done.returncode == 2, (name, done.stderr)
        assert needle in done.stderr and "Traceback" not in done.stderr, (name, done.stderr)
    missing = _cli_train(tmp_path / "missing.toml")
    assert missing.returncode == 2 and "no such job file" in missing.stderr


def test_a_folder_given_as_the_job_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        JobSpec.load(tmp_path)
    assert str(tmp_path) in str(e.value)
