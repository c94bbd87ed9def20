"""inspect_model reads config.json and safetensors headers, and agrees with the loaded model."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten
from mlx_lm.utils import get_total_parameters, load

from engine.model import ModelError, inspect_model

from .conftest import STORIES, build, save_folder, tiny_config


def _linear_shapes(model) -> dict[str, tuple[int, int]]:
    """In-layer name -> (in, out) of the loaded model's linear modules, for cross-checking."""
    out = {}
    for name, m in model.layers[0].named_modules():
        if isinstance(m, nn.QuantizedLinear):
            out[name] = (m.weight.shape[1] * 32 // m.bits, m.weight.shape[0])
        elif isinstance(m, nn.Linear):
            out[name] = (m.weight.shape[1], m.weight.shape[0])
    return out


def test_stories_matches_the_loaded_model():
    info = inspect_model(STORIES)
    model, _ = load(str(STORIES))
    config = json.loads((STORIES / "config.json").read_text())
    assert info.model_type == "llama" and info.supported
    assert info.num_layers == len(model.layers) == config["num_hidden_layers"]
    assert info.hidden_size == config["hidden_size"]
    assert info.vocab_size == config["vocab_size"]
    assert info.param_count == get_total_parameters(model)
    assert info.tied_embeddings and info.quantization is None and info.dtype == "float32"
    shapes = {m.name: (m.in_features, m.out_features) for m in info.linear_modules}
    assert shapes == _linear_shapes(model)
    assert info.layer_prefix == "model.layers"
    assert inspect_model("demo") == info


def test_reads_headers_only(tmp_path):
    """A folder whose safetensors file holds the header and then a hole (a sparse file of
    the right size, no tensor data written) still inspects."""
    raw = (STORIES / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    with open(tmp_path / "model.safetensors", "wb") as f:
        f.write(raw[: 8 + n])
        f.truncate(len(raw))
    (tmp_path / "config.json").write_bytes((STORIES / "config.json").read_bytes())
    info = inspect_model(tmp_path)
    assert info.param_count == inspect_model(STORIES).param_count
    assert info.weight_bytes == len(raw) - 8 - n


def test_biases_and_sharded_index(tmp_path):
    config = tiny_config(num_hidden_layers=2)
    model = build(config)
    weights = dict(tree_flatten(model.parameters()))
    names = sorted(weights)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    for file, keys in shards.items():
        mx.save_safetensors(str(tmp_path / file), {k: weights[k] for k in keys})
    index = {"weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text(json.dumps(config))
    info = inspect_model(tmp_path)
    assert len(info.weight_files) == 2
    assert info.param_count == get_total_parameters(model)
    by_name = {m.name: m for m in info.linear_modules}
    assert by_name["self_attn.q_proj"].has_bias and not by_name["self_attn.o_proj"].has_bias
    assert info.bias_params == sum(v.size for k, v in weights.items() if k.endswith(".bias"))
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelError, match="model-00002-of-00002.safetensors"):
        inspect_model(tmp_path)


def test_quantized_checkpoint(quantized_stories):
    info = inspect_model(quantized_stories)
    model, _ = load(str(quantized_stories))
    assert info.quantization["bits"] == 4 and info.quantization["group_size"] == 32
    assert info.param_count == get_total_parameters(model) == inspect_model(STORIES).param_count
    by_name = {m.name: m for m in info.linear_modules}
    assert by_name["self_attn.q_proj"].quantized and by_name["self_attn.q_proj"].in_features == 64
    assert not by_name["mlp.down_proj"].quantized  # 172 does not divide into groups of 32
    assert {m.name: (m.in_features, m.out_features) for m in info.linear_modules} == _linear_shapes(
        model
    )
    assert info.weight_bytes < inspect_model(STORIES).weight_bytes / 2


def test_saved_tiny_llama_untied(tmp_path):
    config = tiny_config("llama", tie_word_embeddings=False, num_hidden_layers=4)
    info = inspect_model(save_folder(build(config), config, tmp_path))
    assert not info.tied_embeddings and info.num_layers == 4 and info.num_kv_heads == 2


def _folder(tmp_path: Path, config: object = None, weights: bytes | None = None) -> Path:
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (tmp_path / "config.json").write_text(text)
    if weights is not None:
        (tmp_path / "model.safetensors").write_bytes(weights)
    return tmp_path


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p / "absent", "no such model folder"),
        (lambda p: _folder(p), "no config.json"),
        (
            lambda p: _folder(p, '{"model_type": "llama",\n  oops}'),
            r"config.json:2:\d+: not valid JSON",
        ),
        (lambda p: _folder(p, {"hidden_size": 4}), "model_type: missing"),
        (lambda p: _folder(p, {"model_type": "llama"}), "no weights"),
        (lambda p: _folder(p, {"model_type": "llama"}, b"\xff" * 20), "not a safetensors file"),
        (
            lambda p: _folder(p, {"model_type": "llama"}, struct.pack("<Q", 4) + b"nope"),
            "not valid JSON",
        ),
    ],
)
def test_bad_folders_are_named(tmp_path, setup, message):
    path = setup(tmp_path)
    with pytest.raises(ModelError, match=message) as err:
        inspect_model(path)
    assert str(tmp_path) in str(err.value)


def test_pytorch_only_folder_hints_at_convert(tmp_path):
    _folder(tmp_path, {"model_type": "llama"})
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="pytorch_model.bin; convert with mlx_lm.convert"):
        inspect_model(tmp_path)


def test_format_text_names_the_target_modules():
    text = inspect_model("demo").format_text()
    assert "5 layers, hidden 64, MLP 172, vocab 512" in text
    assert "mlp.down_proj (172->64)" in text and "self_attn.k_proj (64->32)" in text
