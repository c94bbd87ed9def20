"""stories260K, a tiny qwen2 with q/k/v biases saved as a real folder, and a logits helper."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import pytest
from mlx_lm.models import qwen2
from mlx_lm.tuner.dora import DoRALinear
from mlx_lm.tuner.lora import LoRALinear
from mlx_lm.utils import save_model

from engine.config import resolve_model_path

STORIES = Path(resolve_model_path("demo"))
PROMPT = mx.array([[1, 403, 407, 261, 378, 292, 306, 264, 321, 269]])


def tiny_qwen_config(**overrides) -> dict:
    config = {
        "model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 4, "intermediate_size": 96,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "vocab_size": 512, "tie_word_embeddings": True, "rope_theta": 10000.0,
    }  # fmt: skip
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory) -> Path:
    """A tiny random qwen2 (q/k/v biases) that mlx_lm.load opens (stories tokenizer copied in)."""
    config = tiny_qwen_config()
    mx.random.seed(7)
    model = qwen2.Model(qwen2.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    folder = tmp_path_factory.mktemp("qwen2")
    save_model(folder, model)
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(STORIES / name, folder / name)
    return folder


def perturb(model, seed: int = 1, biases: bool = False) -> None:
    """Random lora_b (DoRA: and magnitudes; and biases) so the adapter changes the output,
    as training would."""
    key = mx.random.key(seed)
    for _, m in model.named_modules():
        if isinstance(m, (LoRALinear, DoRALinear)):
            key, sub = mx.random.split(key)
            m.lora_b = 0.2 * mx.random.normal(m.lora_b.shape, key=sub)
        if isinstance(m, DoRALinear):
            key, sub = mx.random.split(key)
            m.m = m.m * (1.0 + 0.2 * mx.random.normal(m.m.shape, key=sub))
        if biases and "bias" in m and isinstance(m["bias"], mx.array):
            key, sub = mx.random.split(key)
            m.bias = m.bias + 0.3 * mx.random.normal(m.bias.shape, key=sub)
    mx.eval(model.parameters())


def max_diff(a: mx.array, b: mx.array) -> float:
    return mx.abs(a.astype(mx.float32) - b.astype(mx.float32)).max().item()


def fused_tol(expected: mx.array) -> float:
    """Fusing W + s*B^T A^T reorders float sums: allow a few ulps of the largest logit."""
    return 4e-6 * mx.abs(expected).max().item()
