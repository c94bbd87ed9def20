"""inspect-model on the config-only folders of resources/model_configs: the parameter counts
the model cards state, and LoRA counts that match the closed form r * (in + out) per module."""

from __future__ import annotations

import json

import pytest

from engine.config import RESOURCES
from engine.model import inspect_model

CONFIGS = RESOURCES / "model_configs"
# name -> parameter count the model cards state, in billions (truncated to 2 decimals)
PUBLISHED = {"Qwen2.5-0.5B": 0.49, "Qwen2.5-1.5B-Instruct": 1.54, "Qwen2.5-7B": 7.61,
             "Llama-3.1-8B": 8.03}  # fmt: skip


def _closed_form(cfg: dict, rank: int, all_linear: bool) -> int:
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    kv = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    per_layer = (h + h) + (h + kv) + (h + kv) + (h + h)  # q, k, v, o
    if all_linear:
        per_layer += 3 * (h + inter)  # gate, up, down
    return rank * per_layer * cfg["num_hidden_layers"]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_config_only_folder_counts_parameters(name):
    info = inspect_model(CONFIGS / name)
    assert not info.weights_present and info.weight_files == ()
    assert int(info.param_count / 1e7) / 100 == PUBLISHED[name]  # the cards truncate
    cfg = json.loads((CONFIGS / name / "config.json").read_text())
    for rank in (8, 16):
        attention = ["q_proj", "k_proj", "v_proj", "o_proj"]
        assert info.lora_params(rank, attention) == _closed_form(cfg, rank, False)
        assert info.lora_params(rank) == _closed_form(cfg, rank, True)
    assert "weights     absent" in info.format_text()


def test_a_config_that_cannot_build_a_model_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(Exception, match="no weights.*config.json alone does not describe"):
        inspect_model(tmp_path)
