"""QLoRA quantization: what fits is quantized, what does not stays float, LoRA trains on both."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import pytest
from mlx.utils import tree_flatten

from engine.config import LoraSpec, ModelSpec
from engine.lora import apply_lora
from engine.model import load_model, quantize_model

TOKENS = mx.array([[1, 403, 407, 261, 378, 292, 306, 264, 321, 269, 282, 391]])


def _loss(model, x, y):
    return nn.losses.cross_entropy(model(x), y, reduction="mean")


def _train(model, steps: int = 8) -> list[float]:
    x, y = TOKENS[:, :-1], TOKENS[:, 1:]
    opt = optim.AdamW(learning_rate=1e-2)
    step = nn.value_and_grad(model, _loss)
    losses = []
    for _ in range(steps):
        loss, grads = step(model, x, y)
        opt.update(model, grads)
        mx.eval(model.parameters(), opt.state)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_modules_that_do_not_divide_stay_float(group_size):
    model = load_model(ModelSpec(path="demo")).model
    report = quantize_model(model, bits=4, group_size=group_size)
    modules = dict(model.named_modules())
    for i in range(5):
        path = f"model.layers.{i}.mlp.down_proj"
        assert isinstance(modules[path], nn.Linear)
        assert "172 is not divisible" in report.skipped[path]
    for path in report.quantized:
        assert isinstance(modules[path], (nn.QuantizedLinear, nn.QuantizedEmbedding))
    if group_size == 128:  # every other input dimension is 64
        assert report.quantized == [] and report.bytes_after == report.bytes_before
    else:
        assert "model.layers.0.self_attn.q_proj" in report.quantized
        assert report.bytes_after < report.bytes_before / 2
    assert model(TOKENS).shape == (1, TOKENS.shape[1], 512)  # still runs


def test_quantized_logits_stay_close_and_8_bits_closer():
    reference = load_model(ModelSpec(path="demo")).model(TOKENS)
    errors = {}
    for bits in (4, 8):
        loaded = load_model(ModelSpec(path="demo", quantize=True, bits=bits, group_size=32))
        assert loaded.quant_report.source == "orchard" and loaded.quant_report.bits == bits
        errors[bits] = mx.abs(loaded.model(TOKENS) - reference).max().item()
    scale = mx.abs(reference).max().item()
    assert errors[8] < errors[4] < 0.5 * scale
    assert errors[8] < 0.05 * scale


def _check_lora_trains_on_a_quantized_base(model):
    apply_lora(model, LoraSpec(target_modules=["q_proj", "v_proj", "down_proj"], rank=4), seed=0)
    frozen = {k: mx.array(v) for k, v in tree_flatten(model.parameters()) if "lora_" not in k}
    losses = _train(model)
    assert losses[-1] < losses[0] - 0.1
    after = dict(tree_flatten(model.parameters()))
    assert all(mx.array_equal(v, after[k]) for k, v in frozen.items())
    names = {k for k, _ in tree_flatten(model.trainable_parameters())}
    assert names and all(k.endswith((".lora_a", ".lora_b")) for k in names)


def test_qlora_trains_on_a_base_quantized_at_load():
    loaded = load_model(ModelSpec(path="demo", quantize=True, group_size=32))
    modules = dict(loaded.model.named_modules())
    assert isinstance(modules["model.layers.0.self_attn.q_proj"], nn.QuantizedLinear)
    _check_lora_trains_on_a_quantized_base(loaded.model)


def test_lora_trains_on_a_checkpoint_quantized_by_mlx_lm(quantized_stories):
    loaded = load_model(ModelSpec(path=str(quantized_stories), quantize=True, bits=8))
    report = loaded.quant_report
    assert report.source == "checkpoint" and report.bits == 4 and report.group_size == 32
    assert "model.layers.0.mlp.down_proj" in report.skipped  # mlx-lm left it float too
    modules = dict(loaded.model.named_modules())
    assert modules["model.layers.0.self_attn.q_proj"].bits == 4  # not quantized again at 8 bits
    _check_lora_trains_on_a_quantized_base(loaded.model)
