import math

import mlx.core as mx
import numpy as np
import pytest

from engine.config import OptimSpec
from engine.optim import (
    DynamicLossScale,
    all_finite,
    clip_by_global_norm,
    clip_with_norm,
    global_norm,
    learning_rate_at,
    make_schedule,
)


def test_warmup_then_cosine_reaches_floor():
    spec = OptimSpec(learning_rate=1.0, schedule="cosine", warmup_steps=4, min_lr_ratio=0.1)
    lr = make_schedule(spec, total_steps=20)
    assert [lr(s) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lr(4) == pytest.approx(1.0)
    assert lr(19) == pytest.approx(0.1)
    mid = 4 + (19 - 4) / 2
    assert learning_rate_at(int(mid * 2) // 2, 20, 1.0, "cosine", 4, 0.1) < 1.0
    values = [lr(s) for s in range(4, 20)]
    assert all(a >= b for a, b in zip(values[:-1], values[1:], strict=True))
    assert lr(100) == pytest.approx(0.1)  # past the end it stays at the floor


def test_linear_and_constant():
    assert learning_rate_at(0, 11, 2.0, "linear", 0, 0.5) == pytest.approx(2.0)
    assert learning_rate_at(5, 11, 2.0, "linear", 0, 0.5) == pytest.approx(1.5)
    assert learning_rate_at(10, 11, 2.0, "linear", 0, 0.5) == pytest.approx(1.0)
    assert learning_rate_at(7, 11, 2.0, "constant", 0, 0.5) == 2.0
    assert learning_rate_at(3, 10, 1.0, "cosine", 0, 0.0) == pytest.approx(
        0.5 * (1 + math.cos(math.pi / 3))
    )


def test_schedule_rejects_bad_input():
    with pytest.raises(ValueError, match="schedule"):
        learning_rate_at(0, 10, 1.0, "step")
    with pytest.raises(ValueError, match="total_steps"):
        learning_rate_at(0, 0, 1.0)


def test_clip_by_global_norm_and_precomputed_norm():
    grads = {"a": mx.array([3.0, 0.0]), "b": [mx.array([4.0])]}
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert float(norm) == pytest.approx(5.0)
    assert float(global_norm(clipped)) == pytest.approx(1.0, rel=1e-5)
    # a shard clipped with the true global norm scales exactly like the whole
    shard = clip_with_norm({"a": grads["a"]}, norm, 1.0)
    np.testing.assert_allclose(np.array(shard["a"]), np.array(clipped["a"]))
    untouched, _ = clip_by_global_norm(grads, 10.0)
    np.testing.assert_allclose(np.array(untouched["a"]), [3.0, 0.0], rtol=1e-6)
    off = clip_with_norm(grads, norm, 0.0)
    assert off is grads


def test_dynamic_loss_scale_backs_off_skips_and_grows():
    s = DynamicLossScale(init_scale=8.0, growth_interval=2)
    assert not s.update(bool(all_finite({"g": mx.array([1.0, float("inf")])})))
    assert s.scale == 4.0 and s.state.skipped_steps == 1
    assert s.update(bool(all_finite({"g": mx.array([1.0])})))
    assert s.update(True)
    assert s.scale == 8.0
    assert not bool(all_finite([mx.array([float("nan")])]))
    copy = DynamicLossScale()
    copy.load_state_dict(s.state_dict())
    assert copy.state == s.state
    with pytest.raises(ValueError, match="backoff_factor"):
        DynamicLossScale(backoff_factor=1.5)
