"""Reading mlx-lm adapter folders and mapping them to PEFT names, without torch."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from engine.export import ExportError, peft_config, peft_state_dict, read_adapter


def test_reads_what_mlx_lm_wrote(stories_adapter: Path) -> None:
    adapter = read_adapter(stories_adapter)
    assert adapter.rank == 4 and adapter.scale == 2.0
    assert len(adapter.modules) == 3 * 3  # 3 layers x (q, v, down)
    down = adapter.modules["model.layers.4.mlp.down_proj"]
    assert down.lora_a.shape == (172, 4) and down.lora_b.shape == (4, 64)


def test_peft_layout_is_the_transpose(stories_adapter: Path) -> None:
    adapter = read_adapter(stories_adapter)
    state = peft_state_dict(adapter)
    pair = adapter.modules["model.layers.2.self_attn.q_proj"]
    a = state["base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight"]
    b = state["base_model.model.model.layers.2.self_attn.q_proj.lora_B.weight"]
    assert np.array_equal(np.array(a), np.array(pair.lora_a).T)
    assert np.array_equal(np.array(b), np.array(pair.lora_b).T)
    # PEFT's delta (alpha/r) B A equals mlx-lm's scale * (lora_a @ lora_b).T
    config = peft_config(adapter, None, total_layers=5)
    peft_delta = config["lora_alpha"] / config["r"] * (np.array(b) @ np.array(a))
    mlx_delta = adapter.scale * (np.array(pair.lora_a) @ np.array(pair.lora_b)).T
    assert np.allclose(peft_delta, mlx_delta, atol=1e-6)
    assert config["layers_to_transform"] == [2, 3, 4] and config["layers_pattern"] == "layers"


def test_uneven_selection_becomes_an_exact_regex(stories_adapter: Path) -> None:
    import re

    adapter = read_adapter(stories_adapter)
    del adapter.modules["model.layers.3.self_attn.v_proj"]
    target = peft_config(adapter, None, 5)["target_modules"]
    assert isinstance(target, str)
    assert re.fullmatch(target, "model.layers.3.self_attn.q_proj")
    assert not re.fullmatch(target, "model.layers.3.self_attn.v_proj")
    assert not re.fullmatch(target, "model.layers.1.self_attn.q_proj")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c, w: c.update(fine_tune_type="full"),
            "fine_tune_type: expected one of lora, dora",
        ),
        (lambda c, w: c["lora_parameters"].pop("scale"), "lora_parameters.scale: expected"),
        (lambda c, w: c["lora_parameters"].update(rank=8), "differs from lora_parameters.rank"),
        (lambda c, w: w.pop("model.layers.4.mlp.down_proj.lora_b"), "down_proj.lora_b is missing"),
        (lambda c, w: w.update({"model.layers.4.mlp.down_proj.m": mx.ones(3)}), "not a LoRA"),
    ],
)
def test_bad_adapters_are_named(stories_adapter: Path, edit, message: str) -> None:
    config_path = stories_adapter / "adapter_config.json"
    weights_path = stories_adapter / "adapters.safetensors"
    config = json.loads(config_path.read_text())
    weights = mx.load(str(weights_path))
    edit(config, weights)
    config_path.write_text(json.dumps(config))
    mx.save_safetensors(str(weights_path), weights)
    with pytest.raises(ExportError, match=message):
        read_adapter(stories_adapter)


def test_missing_files(tmp_path: Path, stories_adapter: Path) -> None:
    with pytest.raises(ExportError, match="no such adapter folder"):
        read_adapter(tmp_path / "none")
    (tmp_path / "a").mkdir()
    with pytest.raises(ExportError, match="expected adapter_config.json and adapters.safetensors"):
        read_adapter(tmp_path / "a")
    (stories_adapter / "adapters.safetensors").write_bytes(b"not tensors")
    with pytest.raises(ExportError, match="adapters.safetensors: not a readable safetensors"):
        read_adapter(stories_adapter)
