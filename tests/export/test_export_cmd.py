"""`orchard export`: each format from a run folder, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.utils import load

from engine.cli.export_cmd import export_main
from engine.config import JobSpec
from tests.export.conftest import STORIES, TOKENS, write_mlx_adapter


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "r1"
    write_mlx_adapter(run / "adapter", num_layers=5, keys=["self_attn.q_proj", "self_attn.v_proj"])
    job = JobSpec()
    job.model.path = str(STORIES)
    job.save(run / "job.toml")
    return run


def test_mlx_format_is_the_adapter_folder(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert export_main(str(run_dir), "mlx", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapters.safetensors"]
    model, _ = load(str(STORIES), adapter_path=str(out))  # mlx-lm takes it as it is
    assert model(mx.array(TOKENS)).shape == (1, len(TOKENS[0]), 512)
    assert str(out) in capsys.readouterr().out


def test_peft_format_writes_peft_files(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "peft"
    assert export_main(str(run_dir), "peft", str(out)) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    # Every layer adapted: no layers_to_transform; base taken from job.toml.
    assert config["layers_to_transform"] is None
    assert config["base_model_name_or_path"] == str(STORIES)
    assert config["target_modules"] == ["self_attn.q_proj", "self_attn.v_proj"]
    names = mx.load(str(out / "adapter_model.safetensors"))
    assert len(names) == 2 * 2 * 5
    a = names["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    assert a.shape == (4, 64)


def test_fused_format_loads_in_mlx_lm(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fused"
    out.mkdir()  # an empty folder is fine
    assert export_main(str(run_dir), "fused", str(out)) == 0
    fused, _ = load(str(out))
    ref, _ = load(str(STORIES), adapter_path=str(run_dir / "adapter"))
    diff = np.array(fused(mx.array(TOKENS)) - ref(mx.array(TOKENS)))
    assert np.abs(diff).max() < 1e-4


def test_run_without_adapter(tmp_path: Path, capsys) -> None:
    (tmp_path / "run").mkdir()
    assert export_main(str(tmp_path / "run"), "peft", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "has no adapter yet" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_missing_run_and_unknown_format(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert export_main(str(tmp_path / "nope"), "peft", str(tmp_path / "o")) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert export_main(str(run_dir), "gguf", str(tmp_path / "o")) == 2
    assert "--format: expected one of mlx, peft, fused, got 'gguf'" in capsys.readouterr().err


def test_existing_non_empty_out_is_refused(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert export_main(str(run_dir), "mlx", str(out)) == 2
    assert "already holds files" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_broken_adapter_is_named(run_dir: Path, tmp_path: Path, capsys) -> None:
    (run_dir / "adapter" / "adapter_config.json").write_text("{not json")
    assert export_main(str(run_dir), "peft", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "adapter_config.json:1:2: not valid JSON" in err
    assert not any(p.name.startswith(".o.") for p in tmp_path.iterdir())  # no temp left over
