from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ConfigError, JobSpec, field_help, resolve_model_path


def test_defaults_round_trip_through_toml(tmp_path: Path) -> None:
    job = JobSpec()
    path = tmp_path / "job.toml"
    job.save(path)
    assert JobSpec.load(path) == job


def test_edited_job_round_trips() -> None:
    job = JobSpec().with_overrides(
        ["lora.rank=32", "lora.target_modules=['q_proj']", "run.precision='bf16'"]
    )
    assert (
        job.lora.rank == 32
        and job.lora.target_modules == ["q_proj"]
        and job.run.precision == "bf16"
    )
    assert JobSpec.from_toml(job.to_toml()) == job


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"lora": {"rank": 0}}, "lora.rank: expected a value in [1, 1024], got 0"),
        ({"lora": {"rank": "8"}}, "lora.rank: expected an integer, got '8'"),
        ({"lora": {"rank": True}}, "lora.rank: expected an integer"),
        ({"lora": {"bias": "some"}}, "lora.bias: expected one of none, all, lora_only, got 'some'"),
        ({"lora": {"dropout": 1.5}}, "lora.dropout: expected a value in [0.0, 0.9], got 1.5"),
        (
            {"lora": {"target_modules": "q_proj"}},
            "lora.target_modules: expected a list of a string",
        ),
        (
            {"lora": {"target_modules": []}},
            "lora.target_modules: expected at least one module name",
        ),
        ({"lora": {"layers": [-1]}}, "lora.layers: expected layer indices >= 0"),
        (
            {"optim": {"learning_rate": -1.0}},
            "optim.learning_rate: expected a value in [0.0, 10.0]",
        ),
        ({"optim": {"learning_rate": float("nan")}}, "optim.learning_rate: expected a number"),
        (
            {"optim": {"schedule": "step"}},
            "optim.schedule: expected one of constant, linear, cosine",
        ),
        ({"run": {"batch_size": 0}}, "run.batch_size: expected a value in [1, 65536]"),
        ({"run": {"precision": "fp8"}}, "run.precision: expected one of auto, fp32, bf16, fp16"),
        ({"dist": {"mode": "gossip"}}, "dist.mode: expected one of auto, all-reduce"),
        ({"dist": {"workers": 0}}, "dist.workers: expected a value in [1, 64]"),
        ({"model": {"bits": 3}}, "model.bits: expected one of 4, 8, got 3"),
        ({"data": {"max_seq_len": 4}}, "data.max_seq_len: expected a value in [8, 131072]"),
        ({"data": {"format": "csv"}}, "data.format: expected one of auto, alpaca"),
        ({"lora": {"rnak": 8}}, "lora.rnak: unknown setting"),
        ({"lroa": {}}, "lroa: unknown section"),
        ({"lora": 3}, "lora: expected a table, got int"),
    ],
)
def test_bad_values_name_the_field(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        JobSpec.from_dict(data)
    assert any(fragment in p for p in err.value.problems), err.value.problems


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        JobSpec.from_dict({"lora": {"rank": 0, "alpha": -1.0}, "run": {"steps": 0}})
    assert len(err.value.problems) == 3


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "job.toml"
    bad.write_text("[lora\nrank = 8\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        JobSpec.load(bad)
    with pytest.raises(ConfigError, match="no such job file"):
        JobSpec.load(tmp_path / "missing.toml")
    bad.write_bytes(b"\xff\xfe[lora]")
    with pytest.raises(ConfigError, match="not UTF-8"):
        JobSpec.load(bad)


def test_overrides_reject_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="lora.rnak: unknown setting"):
        JobSpec().with_overrides(["lora.rnak=3"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        JobSpec().with_overrides(["rank=3"])


def test_every_field_has_help() -> None:
    import dataclasses

    for section in dataclasses.fields(JobSpec):
        for f in dataclasses.fields(getattr(JobSpec(), section.name)):
            assert field_help(section.name, f.name)["help"]


def test_demo_model_resolves_to_bundled_folder() -> None:
    assert (Path(resolve_model_path("demo")) / "config.json").is_file()
