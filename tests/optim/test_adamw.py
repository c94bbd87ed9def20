"""AdamW against a numpy reference written from Loshchilov & Hutter's Algorithm 2."""

import mlx.core as mx
import numpy as np
import pytest

from engine.optim import AdamW, FlatAdamW, FlatLayout, is_no_decay_name


def reference_adamw(theta, grads, lrs, b1, b2, eps, wd, decay=1.0):
    """theta_t = theta_{t-1} - lr*wd*d*theta_{t-1} - lr * m_hat / (sqrt(v_hat) + eps)."""
    theta = theta.astype(np.float64)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    out = []
    for t, (g, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
        g = g.astype(np.float64)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        theta = theta - lr * wd * decay * theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(theta.copy())
    return out


def test_matches_numpy_reference_over_several_steps():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3)).astype(np.float32)
    b0 = rng.normal(size=(3,)).astype(np.float32)
    grads = [
        {
            "w": rng.normal(size=(4, 3)).astype(np.float32),
            "b": rng.normal(size=(3,)).astype(np.float32),
        }
        for _ in range(6)
    ]
    lrs = [1e-2, 2e-2, 3e-2, 2e-2, 1e-2, 5e-3]
    opt = AdamW(learning_rate=lrs[0], betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    params = {"layer": {"weight": mx.array(w0), "bias": mx.array(b0)}}
    got_w, got_b = [], []
    for g, lr in zip(grads, lrs, strict=True):
        opt.learning_rate = lr
        tree = {"layer": {"weight": mx.array(g["w"]), "bias": mx.array(g["b"])}}
        params = opt.apply_gradients(tree, params)
        mx.eval(params)
        got_w.append(np.array(params["layer"]["weight"]))
        got_b.append(np.array(params["layer"]["bias"]))
    ref_w = reference_adamw(w0, [g["w"] for g in grads], lrs, 0.8, 0.95, 1e-6, 0.1)
    ref_b = reference_adamw(b0, [g["b"] for g in grads], lrs, 0.8, 0.95, 1e-6, 0.1, decay=0.0)
    for t in range(len(grads)):
        np.testing.assert_allclose(got_w[t], ref_w[t], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_b[t], ref_b[t], rtol=1e-5, atol=1e-6)
    # the bias really escaped decay: with decay it would differ
    decayed = reference_adamw(b0, [g["b"] for g in grads], lrs, 0.8, 0.95, 1e-6, 0.1)
    assert np.abs(decayed[-1] - got_b[-1]).max() > 1e-4


def test_decay_norms_and_biases_option():
    opt = AdamW(learning_rate=0.1, weight_decay=0.5, decay_norms_and_biases=True)
    p = {"norm": {"weight": mx.ones((3,))}}
    g = {"norm": {"weight": mx.zeros((3,))}}
    new = opt.apply_gradients(g, p)
    np.testing.assert_allclose(np.array(new["norm"]["weight"]), 0.95, rtol=1e-6)
    opt2 = AdamW(learning_rate=0.1, weight_decay=0.5)
    new2 = opt2.apply_gradients(g, p)
    np.testing.assert_allclose(np.array(new2["norm"]["weight"]), 1.0, rtol=1e-6)


def test_flat_shard_with_mask_equals_tree_update():
    """FlatAdamW on one flat vector, its decay mask off for the bias, is the tree AdamW."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(5, 2)).astype(np.float32)
    b = rng.normal(size=(2,)).astype(np.float32)
    tree_opt = AdamW(learning_rate=0.05, weight_decay=0.2)
    params = {"proj": {"weight": mx.array(w), "bias": mx.array(b)}}
    layout = FlatLayout(params)
    flat = layout.flatten(params)
    mask = layout.decay_mask(is_no_decay_name)
    assert mask is not None and mask.tolist() == [1.0] * 10 + [0.0] * 2  # weight, then bias
    flat_opt = FlatAdamW(layout.total, weight_decay=0.2, grad_clip=0.0, decay_mask=mask)
    for _ in range(4):
        gw = rng.normal(size=(5, 2)).astype(np.float32)
        gb = rng.normal(size=(2,)).astype(np.float32)
        grads = {"proj": {"weight": mx.array(gw), "bias": mx.array(gb)}}
        params = tree_opt.apply_gradients(grads, params)
        flat, _, _ = flat_opt.update(flat, layout.flatten(grads), mx.array(1.0), 1.0, 1.0, 0.05)
    want = np.array(layout.flatten(params))
    np.testing.assert_allclose(np.array(flat), want, rtol=2e-5, atol=2e-6)  # fused: other rounding
    assert flat_opt.steps_applied == 4


def test_explicit_decay_tree():
    opt = AdamW(learning_rate=0.1, weight_decay=1.0)
    p = {"w": mx.ones((2,))}
    new = opt.apply_gradients({"w": mx.zeros((2,))}, p, decay={"w": mx.array([0.0, 1.0])})
    np.testing.assert_allclose(np.array(new["w"]), [1.0, 0.9], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": 1e-3, "betas": (1.0, 0.9)}, "beta1"),
        ({"learning_rate": 1e-3, "betas": (0.9, -0.1)}, "beta2"),
        ({"learning_rate": 1e-3, "eps": -1.0}, "eps"),
        ({"learning_rate": 1e-3, "weight_decay": -0.1}, "weight_decay"),
        ({"learning_rate": 1e-3, "betas": (0.9,)}, "betas"),
    ],
)
def test_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        AdamW(**kwargs)


def test_no_decay_names():
    assert is_no_decay_name("model.layers.0.input_layernorm.weight")
    assert is_no_decay_name("model.norm.weight")
    assert is_no_decay_name("layers.1.self_attn.q_proj.bias")
    assert not is_no_decay_name("layers.1.self_attn.q_proj.lora_a")
    assert not is_no_decay_name("layers.1.self_attn.q_proj.weight")
