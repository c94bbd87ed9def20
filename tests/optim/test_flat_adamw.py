"""The device AdamW over one flat vector: the same maths as the tree AdamW, skips that
change nothing, one fused pass that makes no vector beyond its outputs."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from engine.optim import AdamW, FlatAdamW, FlatLayout, clip_by_global_norm, sumsq_pieces
from engine.optim.flat_adamw import piece_sumsq, total_sumsq


def _tree(rng, scale=1.0):
    return {
        "a": {"w": mx.array(rng.normal(size=(7, 5)).astype(np.float32) * scale)},
        "b": [mx.array(rng.normal(size=(11,)).astype(np.float32) * scale)],
    }


def test_matches_the_tree_adamw_with_scale_clip_and_token_count():
    rng = np.random.default_rng(0)
    params = _tree(rng)
    layout = FlatLayout(params)
    flat_p = layout.flatten(params)
    tree_opt = AdamW(learning_rate=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    flat_opt = FlatAdamW(layout.total, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, grad_clip=1.0)
    for step, lr in enumerate([1e-2, 3e-2, 2e-2, 5e-3]):
        grads = _tree(rng, scale=40.0 if step % 2 else 0.5)  # some steps clip
        ntok, loss_scale = 17.0, 8.0
        # reference: unscale and average, clip by the global norm, tree AdamW
        mean = {k: v for k, v in tree_flatten(grads)}
        mean = layout.unflatten(layout.flatten(mean) / (ntok * loss_scale))
        clipped, want_norm = clip_by_global_norm(mean, 1.0)
        tree_opt.learning_rate = lr
        params = tree_opt.apply_gradients(clipped, params)
        g = layout.flatten(grads)
        sumsq = total_sumsq(sumsq_pieces(g, [(0, layout.total)]))
        flat_p, norm, ok = flat_opt.update(flat_p, g, sumsq, ntok, 1.0 / loss_scale, lr)
        mx.eval(params, flat_p, norm, ok)
        assert bool(ok.item())
        assert norm.item() == pytest.approx(want_norm.item(), rel=1e-5)
        np.testing.assert_allclose(
            np.array(flat_p), np.array(layout.flatten(params)), rtol=2e-5, atol=1e-7
        )
    assert flat_opt.steps_applied == 4


@pytest.mark.parametrize("bad", ["inf", "nan", "no tokens"])
def test_a_skipped_step_leaves_everything_bit_for_bit(bad):
    rng = np.random.default_rng(1)
    n = 64
    opt = FlatAdamW(n, weight_decay=0.1, grad_clip=1.0)
    p = mx.array(rng.normal(size=n).astype(np.float32))
    p, _, _ = opt.update(
        p, mx.array(rng.normal(size=n).astype(np.float32)), mx.array(1.0), 4.0, 1.0, 1e-2
    )
    mx.eval(p, opt.arrays())
    before = [np.array(a) for a in (p, opt.m, opt.v, opt.step)]
    g = rng.normal(size=n).astype(np.float32)
    if bad in ("inf", "nan"):
        g[3] = np.inf if bad == "inf" else np.nan
    gm = mx.array(g)
    sumsq = piece_sumsq(gm)
    p2, norm, ok = opt.update(p, gm, sumsq, 0.0 if bad == "no tokens" else 4.0, 1.0, 1e-2)
    mx.eval(p2, opt.arrays(), norm, ok)
    assert not bool(ok.item())
    for want, got in zip(before, (p2, opt.m, opt.v, opt.step), strict=True):
        assert np.array_equal(want, np.array(got))
    assert opt.steps_applied == 1


def test_the_update_makes_no_vector_beyond_its_outputs():
    n = 1 << 20  # 4 MiB per vector
    opt = FlatAdamW(n, weight_decay=0.1, grad_clip=1.0)
    p, g = mx.random.normal((n,)), mx.random.normal((n,))
    mx.eval(p, g)
    for _ in range(2):  # the first call compiles and makes the moments
        p, norm, ok = opt.update(p, g, piece_sumsq(g), 10.0, 1.0, 1e-3)
        mx.eval(p, opt.arrays(), norm, ok)
    mx.reset_peak_memory()
    active = mx.get_active_memory()  # p, g, m, v
    p, norm, ok = opt.update(p, g, piece_sumsq(g), 10.0, 1.0, 1e-3)
    mx.eval(p, opt.arrays(), norm, ok)
    extra = (mx.get_peak_memory() - active) / (4 * n)
    assert extra <= 3.05, f"the update made {extra:.2f} vectors; its outputs are 3 (p, m, v)"
