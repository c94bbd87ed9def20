"""`orchard export --format fused` of Orchard runs: mlx_lm.load reads it, logits = trained model."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm.utils import load

from engine.cli.export_cmd import export_main
from tests.export.conftest import (
    STORIES,
    TOKENS,
    job_for,
    load_orchard_model,
    write_orchard_adapter,
)

TOL = 1e-4


def logits(model: nn.Module) -> np.ndarray:
    return np.array(model(mx.array(TOKENS)).astype(mx.float32))


def qlora_job(bits: int):
    job = job_for(STORIES, rank=4, alpha=8.0, layers=[1, 3], target_modules=["q_proj", "o_proj"])
    job.model.quantize, job.model.bits, job.model.group_size = True, bits, 32
    return job


def test_qlora_run_fused_dequantized_is_exact(tmp_path: Path) -> None:
    trained = write_orchard_adapter(tmp_path / "run", qlora_job(4))
    assert export_main(str(tmp_path / "run"), "fused", str(tmp_path / "f"), dequantize=True) == 0
    assert "quantization" not in json.loads((tmp_path / "f" / "config.json").read_text())
    fused, _ = load(str(tmp_path / "f"))
    assert np.abs(logits(fused) - logits(trained)).max() < TOL


def test_qlora_run_fused_stays_quantized(tmp_path: Path) -> None:
    job = qlora_job(8)
    trained = write_orchard_adapter(tmp_path / "run", job)
    assert export_main(str(tmp_path / "run"), "fused", str(tmp_path / "f")) == 0
    config = json.loads((tmp_path / "f" / "config.json").read_text())
    assert config["quantization"]["bits"] == 8 and config["quantization"]["group_size"] == 32
    fused, _ = load(str(tmp_path / "f"))
    assert any(isinstance(m, nn.QuantizedLinear) for _, m in fused.named_modules())
    ref, base_q = logits(trained), logits(load_orchard_model(job.model))
    # W + BA rounded to 8 bits again: near the trained model, far nearer than the base.
    assert np.abs(logits(fused) - ref).max() < 0.25 * np.abs(base_q - ref).max()


def test_adapter_for_another_model_is_refused(tmp_path: Path, capsys) -> None:
    write_orchard_adapter(tmp_path / "run", job_for(STORIES, rank=4))
    config_path = tmp_path / "run" / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["lora_parameters"]["rank"] = 4
    weights = mx.load(str(tmp_path / "run" / "adapter" / "adapters.safetensors"))
    weights = {k.replace("layers.4.", "layers.9."): v for k, v in weights.items()}
    mx.save_safetensors(str(tmp_path / "run" / "adapter" / "adapters.safetensors"), weights)
    assert export_main(str(tmp_path / "run"), "fused", str(tmp_path / "f")) == 2
    err = capsys.readouterr().err
    assert "model.layers.9.self_attn.q_proj" in err and "Traceback" not in err
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("fmt", ["peft", "fused"])
def test_orchard_run_exports_name_the_base(tmp_path: Path, fmt: str) -> None:
    write_orchard_adapter(tmp_path / "run", job_for(STORIES, rank=2, target_modules=["v_proj"]))
    assert export_main(str(tmp_path / "run"), fmt, str(tmp_path / fmt)) == 0
    assert any((tmp_path / fmt).iterdir())
