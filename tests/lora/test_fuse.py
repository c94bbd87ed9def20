"""Fusing: mlx-lm's own `mlx_lm fuse` command and Orchard's fuse_adapter give the trained model."""

from __future__ import annotations

import subprocess
import sys

import mlx_lm
import pytest

from engine.config import JobSpec, LoraSpec, ModelSpec
from engine.lora import apply_lora, fuse_adapter, fuse_lora_layers, save_adapter
from engine.model import load_model

from .conftest import PROMPT, STORIES, fused_tol, max_diff, perturb


def _adapter(tmp_path, layers):
    loaded = load_model(ModelSpec(path="demo"))
    job = JobSpec()
    job.lora = LoraSpec(
        rank=4, alpha=4.0, target_modules=["k_proj", "o_proj", "up_proj"], layers=layers
    )
    apply_lora(loaded.model, job.lora, seed=0)
    perturb(loaded.model)
    loaded.model.eval()
    return loaded.model, save_adapter(loaded.model, tmp_path / "adapter", job, str(STORIES))


@pytest.mark.slow
def test_mlx_lm_fuse_command_on_a_non_suffix_adapter(tmp_path):
    model, adapter = _adapter(tmp_path, layers=[0, 3])
    out = tmp_path / "fused"
    cmd = [sys.executable, "-m", "mlx_lm", "fuse", "--model", str(STORIES),
           "--adapter-path", str(adapter), "--save-path", str(out)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    fused, _ = mlx_lm.load(str(out))
    expected = model(PROMPT)
    assert max_diff(fused(PROMPT), expected) <= fused_tol(expected)


def test_fuse_adapter_and_in_memory_fuse_agree(tmp_path):
    model, adapter = _adapter(tmp_path, layers=[2])
    expected = model(PROMPT)
    fused, _ = mlx_lm.load(str(fuse_adapter(adapter, tmp_path / "fused")))
    assert max_diff(fused(PROMPT), expected) <= fused_tol(expected)
    assert fuse_lora_layers(model) == 3
    assert max_diff(model(PROMPT), expected) <= fused_tol(expected)
    assert fuse_lora_layers(model) == 0
