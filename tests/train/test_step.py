"""The token-sum seam: micro-batches and worker shards add up to the whole batch."""

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from engine.data import Batch
from engine.train import GradientStep, Updater, compute_gradients, to_device, token_loss_sum
from tests.train.conftest import collate, synthetic_items, tiny_lora_model


def _flat(tree):
    return {k: np.array(v) for k, v in tree_flatten(tree)}


def test_micro_batches_and_shards_sum_to_the_whole_batch(job):
    job.lora.dropout = 0.0
    model = tiny_lora_model(job)
    items = synthetic_items(8)
    whole = collate(items, 0)
    loss, ntok, grads = compute_gradients(model, [whole])
    mx.eval(loss, ntok, grads)
    step = GradientStep(model)
    l2, n2, g2 = step([collate(items[:4], 0), collate(items[4:], 0)])
    # two "workers", each summing its half; the all-reduce is a plain sum
    la, na, ga = step([collate(items[:2], 0), collate(items[2:4], 0)])
    lb, nb, gb = step([collate(items[4:], 0)])
    assert float(ntok) == float(n2) == float(na + nb) == float(whole.weights.sum())
    np.testing.assert_allclose(float(l2), float(loss), rtol=1e-5)
    np.testing.assert_allclose(float(la + lb), float(loss), rtol=1e-5)
    fw, f2 = _flat(grads), _flat(g2)
    fa, fb = _flat(ga), _flat(gb)
    assert fw and set(fw) == set(f2)
    for k in fw:
        np.testing.assert_allclose(f2[k], fw[k], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(fa[k] + fb[k], fw[k], rtol=1e-4, atol=1e-6)


def test_loss_sum_counts_only_weighted_tokens(job):
    model = tiny_lora_model(job)
    b = collate(synthetic_items(3), 0)
    d = to_device(b)
    loss, ntok = token_loss_sum(model, d.inputs, d.targets, d.weights)
    assert float(ntok) == float(b.weights.sum()) < b.weights.size
    zero = to_device(Batch(b.inputs, b.targets, np.zeros_like(b.weights)))
    l0, n0 = token_loss_sum(model, zero.inputs, zero.targets, zero.weights)
    assert float(l0) == 0.0 and float(n0) == 0.0 and float(loss) > 0


def test_update_divides_by_global_token_count(job):
    """An update with the sum of shard gradients and the global count equals the whole."""
    job.lora.dropout = 0.0
    job.optim.grad_clip = 0.0
    items = synthetic_items(8)
    ma, mb = tiny_lora_model(job), tiny_lora_model(job)
    la, na, ga = compute_gradients(ma, [collate(items, 0)])
    Updater(ma, job, 10).apply_update(ga, na, 0)
    s = GradientStep(mb)
    l1, n1, g1 = s([collate(items[:4], 0)])
    l2, n2, g2 = s([collate(items[4:], 0)])
    summed = [(k, a + b) for (k, a), (_, b) in zip(tree_flatten(g1), tree_flatten(g2), strict=True)]
    Updater(mb, job, 10).apply_update(tree_unflatten(summed), n1 + n2, 0)
    pa, pb = _flat(ma.trainable_parameters()), _flat(mb.trainable_parameters())
    for k in pa:
        np.testing.assert_allclose(pa[k], pb[k], rtol=1e-5, atol=1e-6)
