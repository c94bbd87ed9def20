"""Packed records train exactly as they would alone: each attends only to itself."""

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from engine.data import TokenizedSet, collate, pack
from engine.train import GradientStep
from engine.train.step import packing_for, takes_record_masks
from tests.train.conftest import tiny_lora_model


def _records(n=7, seed=0):
    rng = np.random.default_rng(seed)
    data = TokenizedSet()
    for i in range(n):
        length = int(rng.integers(4, 20))
        w = (rng.random(length) < 0.7).astype(np.uint8)
        w[0] = 0
        data.append(rng.integers(1, 64, length), w, ("f", i))
    return data


def test_packed_rows_give_the_loss_and_gradients_of_the_records_alone(job):
    job.lora.dropout = 0.0
    model = tiny_lora_model(job)
    data = _records()
    packed = pack(data, 48, seed=0)
    assert len(packed) < len(data)
    step = GradientStep(model)
    alone = step([collate([data[i] for i in range(len(data))], 0)])
    together = step([collate([packed[i] for i in range(len(packed))], 0)])
    mx.eval(alone, together)
    assert together[1].item() == alone[1].item()  # the same target tokens
    np.testing.assert_allclose(together[0].item(), alone[0].item(), rtol=1e-5)
    for (name, a), (_, b) in zip(tree_flatten(alone[2]), tree_flatten(together[2]), strict=True):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-6, err_msg=name)


def test_a_model_with_absolute_positions_is_not_packed(job):
    """GPT-2 adds a learned embedding of the absolute position: a packed record would start
    at another position than alone, so the probe refuses it and records stay unpacked."""
    from mlx_lm.models import gpt2

    model = tiny_lora_model(job)
    assert takes_record_masks(model) and packing_for(model, True)
    assert not packing_for(model, False)
    args = gpt2.ModelArgs(model_type="gpt2", n_ctx=64, n_embd=32, n_head=4, n_layer=2,
                          n_positions=64, layer_norm_epsilon=1e-5, vocab_size=64)  # fmt: skip
    absolute = gpt2.Model(args)
    mx.eval(absolute.parameters())
    assert not takes_record_masks(absolute) and not packing_for(absolute, True)


def test_the_record_mask_is_causal_per_record_and_honours_a_sliding_window(job):
    from engine.train.step import record_masks

    seg = mx.array([[1, 1, 1, 2, 2, 0]])
    masks = record_masks(tiny_lora_model(job), seg)
    full = np.array(masks[0].make_mask(6))[0, 0]
    want = np.array(
        [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
         [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]], bool
    )  # fmt: skip
    assert np.array_equal(full, want)
    window = np.array(masks[0].make_mask(6, window_size=2))[0, 0]
    assert np.array_equal(window, want & (np.subtract.outer(np.arange(6), np.arange(6)) < 2))
