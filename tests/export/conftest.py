"""Adapters made by mlx-lm itself (the format) and by engine.lora (what Orchard writes)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import load_model, save_config

from engine.config import JobSpec, ModelSpec
from engine.lora import apply_lora, save_adapter
from engine.model.load import load_model as load_model_spec

STORIES = Path(__file__).resolve().parents[2] / "resources" / "models" / "stories260K"
TOKENS = [[1, 37, 204, 91, 300, 12, 7, 450, 3, 99, 18, 256]]


def write_mlx_adapter(
    folder: Path,
    model_path: Path = STORIES,
    num_layers: int = 3,
    keys: list[str] | None = None,
    rank: int = 4,
    scale: float = 2.0,
    seed: int = 0,
    bias_keys: tuple[str, ...] = (),
) -> Path:
    """Write an adapter the way mlx_lm/lora.py does, with random non-zero lora_b.

    ``bias_keys``: parameter paths of biases to also train (given random values)."""
    model, _ = load_model(Path(model_path))
    model.freeze()
    mx.random.seed(seed)
    params = {"rank": rank, "scale": scale, "dropout": 0.0}
    if keys is not None:
        params["keys"] = keys
    linear_to_lora_layers(model, num_layers, params)
    trainable = {
        k: mx.random.normal(v.shape) * 0.5 if k.endswith("lora_b") else v
        for k, v in tree_flatten(model.trainable_parameters())
    }
    every = dict(tree_flatten(model.parameters()))
    trainable.update({k: mx.random.normal(every[k].shape) for k in bias_keys})
    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(folder / "adapters.safetensors"), trainable)
    config = {
        "model": str(model_path),
        "fine_tune_type": "lora",
        "num_layers": num_layers,
        "lora_parameters": params,
        "seed": seed,
    }
    save_config(config, folder / "adapter_config.json")
    return folder


@pytest.fixture
def stories_adapter(tmp_path: Path) -> Path:
    return write_mlx_adapter(
        tmp_path / "adapter", keys=["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"]
    )


def write_orchard_adapter(run_dir: Path, job: JobSpec, seed: int = 1) -> nn.Module:
    """A run folder (job.toml + adapter/) saved by engine.lora, with random non-zero
    lora_b, trained biases and (DoRA) moved magnitudes; returns the in-memory model the adapter came from."""
    model = load_orchard_model(job.model)
    apply_lora(model, job.lora, seed=job.run.seed)
    mx.random.seed(seed)
    updates = [
        (k, mx.random.normal(v.shape) * (0.5 if k.endswith("lora_b") else 1.0))
        for k, v in tree_flatten(model.trainable_parameters())
        if k.endswith(("lora_b", "bias"))
    ]
    updates += [  # DoRA: magnitudes that moved away from the base norms
        (k, v * (1.0 + 0.2 * mx.random.normal(v.shape)))
        for k, v in tree_flatten(model.trainable_parameters())
        if k.endswith(".m")
    ]
    model.load_weights(updates, strict=False)
    mx.eval(model.parameters())
    run_dir.mkdir(parents=True, exist_ok=True)
    job.save(run_dir / "job.toml")
    save_adapter(model, run_dir / "adapter", job, base_model_id=job.model.path)
    return model


def load_orchard_model(spec: ModelSpec) -> nn.Module:
    return load_model_spec(spec).model


def job_for(model_path: Path, **lora) -> JobSpec:
    job = JobSpec()
    job.model.path = str(model_path)
    for key, value in lora.items():
        setattr(job.lora, key, value)
    return job
