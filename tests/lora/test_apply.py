"""apply_lora: targets, layers, freezing, seeded init, PEFT bias modes, errors."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten
from mlx_lm.tuner.lora import LoRALinear

from engine.config import LoraSpec, ModelSpec
from engine.lora import LoraError, apply_lora
from engine.model import load_model

from .conftest import PROMPT, max_diff


def _stories():
    return load_model(ModelSpec(path="demo")).model


def _trainable(model) -> set[str]:
    return {k for k, _ in tree_flatten(model.trainable_parameters())}


def test_targets_by_last_name_and_dotted_suffix_in_chosen_layers():
    model = _stories()
    spec = LoraSpec(
        rank=4, alpha=12.0, dropout=0.1, target_modules=["q_proj", "mlp.down_proj"], layers=[3, 1]
    )
    report = apply_lora(model, spec, seed=0)
    assert report.layers == [1, 3]
    assert report.keys == ["mlp.down_proj", "self_attn.q_proj"]
    assert sorted(report.adapted) == [
        f"model.layers.{i}.{k}" for i in (1, 3) for k in ("mlp.down_proj", "self_attn.q_proj")
    ]
    for i, layer in enumerate(model.layers):
        q = layer.self_attn.q_proj
        assert isinstance(q, LoRALinear) == (i in (1, 3))
        if i in (1, 3):
            assert q.scale == pytest.approx(3.0) and q.lora_a.shape == (64, 4)
            assert isinstance(q.dropout, nn.Dropout)
    expected = 2 * 4 * ((64 + 64) + (172 + 64))
    assert report.trainable_params == expected
    assert _trainable(model) == {f"model.layers.{i}.{k}.{p}" for i in (1, 3) for k in ("mlp.down_proj", "self_attn.q_proj") for p in ("lora_a", "lora_b")}  # fmt: skip
    assert report.total_params == 260032 + expected
    assert 0 < report.trainable_share < 0.02


def test_fresh_lora_does_not_change_the_output():
    base = _stories()
    reference = base(PROMPT)
    apply_lora(base, LoraSpec(target_modules=["q_proj", "v_proj", "gate_proj"]), seed=3)
    base.eval()
    assert max_diff(base(PROMPT), reference) == 0.0


def test_seeded_init_depends_on_the_seed_only():
    def lora_a(seed, global_seed):
        model = _stories()
        mx.random.seed(global_seed)  # whatever the global RNG holds must not matter
        apply_lora(model, LoraSpec(), seed=seed)
        return [v for k, v in tree_flatten(model.parameters()) if k.endswith("lora_a")]

    a, b, c = lora_a(5, 0), lora_a(5, 123), lora_a(6, 0)
    assert all(mx.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(mx.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_bias_modes_on_a_model_with_biases(qwen_dir):
    def trainable(bias):
        model = load_model(ModelSpec(path=str(qwen_dir))).model
        apply_lora(
            model, LoraSpec(target_modules=["q_proj", "o_proj"], layers=[0, 2], bias=bias), 0
        )
        return {k for k in _trainable(model) if not k.endswith(("lora_a", "lora_b"))}

    def path(i, p):  # an adapted module keeps its base (and bias) under ".linear"
        return f"model.layers.{i}.self_attn.{p}_proj{'.linear' if p == 'q' and i in (0, 2) else ''}.bias"

    assert trainable("none") == set()
    assert trainable("all") == {path(i, p) for i in range(4) for p in "qkv"}
    # q_proj has a bias, o_proj has none: only the adapted layers' q_proj biases train
    assert trainable("lora_only") == {path(i, "q") for i in (0, 2)}


def test_quantized_base_biases_are_never_trained():
    """QuantizedLinear keeps its quantization offsets in "biases"; bias='all' must skip them."""
    model = load_model(ModelSpec(path="demo", quantize=True, group_size=32)).model
    report = apply_lora(model, LoraSpec(bias="all"), seed=0)
    assert report.trainable_biases == []
    assert isinstance(model.layers[0].self_attn.q_proj.linear, nn.QuantizedLinear)
    assert all(k.endswith(("lora_a", "lora_b")) for k in _trainable(model))


def test_unknown_target_lists_the_real_modules():
    with pytest.raises(LoraError) as err:
        apply_lora(_stories(), LoraSpec(target_modules=["q_proj", "c_attn"]), 0)
    message = str(err.value)
    assert "'c_attn'" in message and "lora.target_modules" in message
    for name in ("mlp.down_proj", "mlp.gate_proj", "self_attn.q_proj", "self_attn.v_proj"):
        assert name in message


def test_bad_layers_and_double_application():
    with pytest.raises(
        LoraError, match=r"lora.layers: \[5, 9\] out of range; this model has layers 0..4"
    ):
        apply_lora(_stories(), LoraSpec(layers=[0, 5, 9]), 0)
    model = _stories()
    apply_lora(model, LoraSpec(), 0)
    with pytest.raises(LoraError, match="already has LoRA"):
        apply_lora(model, LoraSpec(), 0)


def test_gradients_reach_only_the_trainable_parameters():
    model = _stories()
    apply_lora(model, LoraSpec(target_modules=["v_proj"], layers=[4]), 0)

    def loss(m, x):
        return nn.losses.cross_entropy(m(x[:, :-1]), x[:, 1:]).mean()

    _, grads = nn.value_and_grad(model, loss)(model, PROMPT)
    names = {k for k, _ in tree_flatten(grads)}
    assert names == {
        "model.layers.4.self_attn.v_proj.lora_a",
        "model.layers.4.self_attn.v_proj.lora_b",
    }
