"""run.grad_checkpoint: the same gradients as without, less memory, and only this model's
layers change (mlx-lm's own grad_checkpoint patches the layer class for every model)."""

from __future__ import annotations

from types import SimpleNamespace

import mlx.core as mx
from mlx.utils import tree_flatten

from engine.config import LoraSpec
from engine.lora import apply_lora
from engine.model.grad_checkpoint import enable_grad_checkpoint, is_grad_checkpointed
from engine.train import GradientStep

from .conftest import build, tiny_config

CONFIG = tiny_config("llama", num_hidden_layers=4)


def _step(checkpoint: bool):
    model = build(CONFIG, seed=3)
    apply_lora(model, LoraSpec(rank=4, target_modules=["q_proj", "down_proj"]), seed=0)
    if checkpoint:
        assert enable_grad_checkpoint(model) == 4
    x = mx.random.randint(0, 512, (2, 128), key=mx.random.key(1))
    batch = SimpleNamespace(inputs=x, targets=x, weights=mx.ones(x.shape))
    step = GradientStep(model)
    mx.eval(step([batch]))  # compile first
    mx.clear_cache()
    mx.reset_peak_memory()
    loss, _, grads = step([batch])
    mx.eval(loss, grads)
    return model, float(loss.item()), dict(tree_flatten(grads)), mx.get_peak_memory()


def test_checkpointing_keeps_the_gradients_and_lowers_the_peak():
    plain, loss, grads, peak = _step(False)
    model, loss_gc, grads_gc, peak_gc = _step(True)
    assert loss_gc == loss and grads_gc.keys() == grads.keys()
    assert all(mx.array_equal(grads[k], grads_gc[k]).item() for k in grads)
    assert peak_gc < peak
    assert is_grad_checkpointed(model) and not is_grad_checkpointed(plain)
    assert type(plain.layers[0]).__call__ is not type(model.layers[0]).__call__
    names = [n for n, _ in tree_flatten(model.parameters())]
    assert names == [n for n, _ in tree_flatten(plain.parameters())]  # adapters keep their keys
