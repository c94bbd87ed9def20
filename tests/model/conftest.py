"""The bundled stories260K, tiny in-memory models saved as real folders, an mlx-lm-quantized copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import pytest
from mlx_lm.models import llama, qwen2
from mlx_lm.utils import save_model

from engine.config import resolve_model_path

STORIES = Path(resolve_model_path("demo"))
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tiny_config(model_type: str = "qwen2", **overrides) -> dict:
    config = {
        "model_type": model_type,
        "hidden_size": 64,
        "num_hidden_layers": 3,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": 512,  # the stories260K tokenizer is copied in
        "tie_word_embeddings": True,
        "rope_theta": 10000.0,
    }
    config.update(overrides)
    return config


def build(config: dict, seed: int = 0):
    """An mlx-lm model from a config dict, randomly initialised from `seed`."""
    module = {"llama": llama, "qwen2": qwen2}[config["model_type"]]
    mx.random.seed(seed)
    model = module.Model(module.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    return model


def save_folder(model, config: dict, folder: Path) -> Path:
    """A model folder mlx_lm.load opens: weights, config.json and the stories tokenizer."""
    save_model(folder, model)
    (folder / "config.json").write_text(json.dumps(config))
    for name in TOKENIZER_FILES:
        shutil.copy(STORIES / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory) -> Path:
    """A tiny qwen2 (q/k/v biases) saved to disk."""
    config = tiny_config()
    return save_folder(build(config), config, tmp_path_factory.mktemp("qwen2"))


@pytest.fixture(scope="session")
def quantized_stories(tmp_path_factory) -> Path:
    """stories260K quantized by mlx-lm's own convert (4 bits, group 32)."""
    from mlx_lm import convert

    out = tmp_path_factory.mktemp("q") / "stories-4bit"
    convert(str(STORIES), str(out), quantize=True, q_group_size=32, q_bits=4)
    return out


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fake Hugging Face Hub (a real HTTP server) serving stories260K as orchard-test/stories,
    with HF_ENDPOINT pointed at it and an empty Hugging Face cache."""
    from tests.model.hub_server import FakeHub

    server = FakeHub().start()
    server.add_folder("orchard-test/stories", STORIES)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    yield server
    server.stop()
