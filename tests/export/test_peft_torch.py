"""PEFT export proved with PEFT itself: transformers + peft on torch CPU give mlx-lm's logits.

The torch side runs in its own venv (.venv-interop/, made once by tests/export/interop_venv.py)
through tests/export/peft_logits.py, so torch never enters the main environment. This
process computes the mlx-lm/Orchard logits; tokens and logits cross as .npy files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import load, load_model

from engine.cli.export_cmd import export_main
from engine.export import export_peft, read_adapter
from tests.export.conftest import STORIES, TOKENS, job_for, write_mlx_adapter, write_orchard_adapter
from tests.export.interop_venv import IndexUnreachable, ensure_interop_venv
from tests.export.torch_side import TorchSide

TOL = 1e-4
# The first test may also make the interop venv (minutes); every step in it has its own deadline.
pytestmark = pytest.mark.timeout(1800)
QWEN2 = {
    "vocab_size": 128, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True,
}  # fmt: skip


@pytest.fixture(scope="session")
def torch_side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchSide]:
    try:
        python = ensure_interop_venv()
    except IndexUnreachable as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the PEFT interop tests, but: {e}")
        pytest.skip(f"no PEFT interop venv: {e}")
    side = TorchSide(python, tmp_path_factory.mktemp("torch-side"))
    yield side
    side.close()


def max_diff(folder: Path, mlx_logits: np.ndarray, torch_logits: np.ndarray) -> float:
    """Both sides' logits are kept next to the inputs, for a look when a comparison fails."""
    np.save(folder / "mlx_logits.npy", mlx_logits)
    np.save(folder / "torch_logits.npy", torch_logits)
    return float(np.abs(torch_logits - mlx_logits).max())


def drop_module(adapter_dir: Path, module: str) -> None:
    """Leave one module out, so the adapted set is not layers x modules (regex targets)."""
    path = adapter_dir / "adapters.safetensors"
    weights = {k: v for k, v in mx.load(str(path)).items() if not k.startswith(module + ".")}
    mx.save_safetensors(str(path), weights)


@pytest.mark.parametrize(
    ("num_layers", "keys", "dropped", "layers"),
    [
        (3, ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"], None, [2, 3, 4]),
        (5, None, None, None),  # every linear of every layer
        (2, ["self_attn.k_proj", "mlp.up_proj"], "model.layers.3.mlp.up_proj", None),
    ],
    ids=["some-layers", "all-layers-all-linears", "uneven-regex"],
)
def test_peft_matches_mlx_lm_on_stories(
    tmp_path: Path, torch_side: TorchSide, num_layers: int, keys, dropped, layers
) -> None:
    adapter_dir = write_mlx_adapter(tmp_path / "adapter", num_layers=num_layers, keys=keys)
    if dropped:
        drop_module(adapter_dir, dropped)
    out = export_peft(read_adapter(adapter_dir), tmp_path / "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == layers
    assert isinstance(config["target_modules"], str) == bool(dropped)
    assert config["lora_alpha"] / config["r"] == 2.0

    model, _ = load(str(STORIES), adapter_path=str(adapter_dir))
    mlx_logits = np.array(model(mx.array(TOKENS)).astype(mx.float32))
    torch_logits = torch_side.logits(STORIES, TOKENS, out, "LlamaForCausalLM")
    base_logits = torch_side.logits(STORIES, TOKENS, None, "LlamaForCausalLM")

    assert np.abs(torch_logits - base_logits).max() > 0.05, "the adapter must change the logits"
    assert max_diff(tmp_path, mlx_logits, torch_logits) < TOL


def tiny_qwen2(torch_side: TorchSide, folder: Path) -> Path:
    """A random Qwen2 (q/k/v biases) saved by transformers, loadable by both sides."""
    torch_side.tiny_model(folder, QWEN2, "Qwen2")
    # transformers 5 writes rope_parameters only; mlx-lm reads rope_theta (default 1e6).
    config = json.loads((folder / "config.json").read_text())
    config["rope_theta"] = config.get("rope_parameters", {}).get("rope_theta", 10000.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("bias_keys", "mode"),
    [
        (("model.layers.2.self_attn.q_proj.linear.bias",), "lora_only"),
        (
            ("model.layers.2.self_attn.q_proj.linear.bias", "model.layers.1.self_attn.k_proj.bias"),
            "all",
        ),
    ],
)
def test_peft_carries_trained_biases(
    tmp_path: Path, torch_side: TorchSide, bias_keys: tuple[str, ...], mode: str
) -> None:
    base = tiny_qwen2(torch_side, tmp_path / "qwen2")
    adapter_dir = write_mlx_adapter(
        tmp_path / "adapter", base, num_layers=2, keys=["self_attn.q_proj", "self_attn.v_proj"],
        rank=2, scale=1.5, bias_keys=bias_keys,
    )  # fmt: skip
    out = export_peft(read_adapter(adapter_dir), tmp_path / "peft")
    assert json.loads((out / "adapter_config.json").read_text())["bias"] == mode

    # Reference: mlx-lm's LoRA layers with the adapter's tensors, biases included.
    model, _ = load_model(base)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    linear_to_lora_layers(model, config["num_layers"], config["lora_parameters"])
    model.load_weights(
        list(mx.load(str(adapter_dir / "adapters.safetensors")).items()), strict=False
    )
    assert set(bias_keys) <= set(dict(tree_flatten(model.parameters())))
    tokens = [[t % 128 for t in TOKENS[0]]]
    mlx_logits = np.array(model(mx.array(tokens)))

    torch_logits = torch_side.logits(base, tokens, out, "Qwen2ForCausalLM")
    assert max_diff(tmp_path, mlx_logits, torch_logits) < TOL


@pytest.mark.parametrize("bias", ["none", "lora_only", "all"])
def test_peft_of_orchard_runs(tmp_path: Path, torch_side: TorchSide, bias: str) -> None:
    """Adapters saved by engine.lora: chosen layers (padded in the file), side-file biases."""
    qwen = bias != "none"
    base = tiny_qwen2(torch_side, tmp_path / "qwen2") if qwen else STORIES
    job = job_for(base, rank=4, alpha=4.0, layers=[0, 2], bias=bias,
                  target_modules=["q_proj", "v_proj", "down_proj"])  # fmt: skip
    trained = write_orchard_adapter(tmp_path / "run", job)
    assert export_main(str(tmp_path / "run"), "peft", str(tmp_path / "peft")) == 0
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [0, 2] and config["bias"] == bias

    tokens = [[t % 128 for t in TOKENS[0]]] if qwen else TOKENS
    mlx_logits = np.array(trained(mx.array(tokens)))
    cls = "Qwen2ForCausalLM" if qwen else "LlamaForCausalLM"
    torch_logits = torch_side.logits(base, tokens, tmp_path / "peft", cls)
    assert max_diff(tmp_path, mlx_logits, torch_logits) < TOL


def test_peft_of_an_orchard_dora_adapter(tmp_path: Path, torch_side: TorchSide) -> None:
    """lora.type = "dora": PEFT's use_dora with lora_magnitude_vector gives mlx-lm's logits."""
    job = job_for(STORIES, rank=4, alpha=8.0, type="dora", layers=[1, 3],
                  target_modules=["q_proj", "o_proj", "up_proj"])  # fmt: skip
    trained = write_orchard_adapter(tmp_path / "run", job)
    assert export_main(str(tmp_path / "run"), "peft", str(tmp_path / "peft")) == 0
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["use_dora"] is True
    names = mx.load(str(tmp_path / "peft" / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.1.self_attn.q_proj.lora_magnitude_vector" in names
    mlx_logits = np.array(trained(mx.array(TOKENS)))
    model, _ = load(str(STORIES), adapter_path=str(tmp_path / "run" / "adapter"))
    np.testing.assert_array_equal(np.array(model(mx.array(TOKENS))), mlx_logits)  # mlx-lm too
    torch_logits = torch_side.logits(STORIES, TOKENS, tmp_path / "peft", "LlamaForCausalLM")
    base_logits = torch_side.logits(STORIES, TOKENS, None, "LlamaForCausalLM")
    assert np.abs(torch_logits - base_logits).max() > 0.05, "the adapter must change the logits"
    assert max_diff(tmp_path, mlx_logits, torch_logits) < TOL
