"""Orchard's trainer and mlx-lm's on the same model, adapters and batches: the same loss curve.

Orchard's step (the chunked loss in several chunks, token sums divided by the count, the
flat fp32 masters and their AdamW) against mlx-lm's own (its ``default_loss`` over the whole
logits and ``optim.AdamW`` on the adapter tree, one compiled step as mlx_lm.tuner.trainer
runs it), with Adam's bias correction on in mlx-lm as Orchard always applies it.
"""

import json

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten
from mlx_lm.tuner.trainer import default_loss

from engine.train import chunked_loss as cl
from engine.train import train
from tests.train.conftest import synthetic_items, tiny_lora_model

STEPS, BATCH = 6, 4


class FixedBatches:
    """Step i takes items [i * BATCH, (i + 1) * BATCH): the same batches on both sides."""

    def micro_batches(self, step, rank, world, accum):
        return [list(range(step * BATCH, (step + 1) * BATCH))]


def mlx_lm_losses(model, items, job) -> list[float]:
    o = job.optim
    opt = optim.AdamW(learning_rate=o.learning_rate, betas=[o.beta1, o.beta2], eps=o.eps,
                      weight_decay=0.0, bias_correction=True)  # fmt: skip
    value_and_grad = nn.value_and_grad(model, default_loss)
    state = [model.state, opt.state, mx.random.state]

    def step(batch, lengths):  # mlx_lm.tuner.trainer's step
        (loss, _), grad = value_and_grad(model, batch, lengths)
        opt.update(model, grad)
        return loss

    step = mx.compile(step, inputs=state, outputs=state)
    losses = []
    for i in range(STEPS):
        rows = [items[j][0] for j in FixedBatches().micro_batches(i, 0, 1, 1)[0]]
        batch = mx.array(np.stack(rows))
        lengths = mx.array([[0, batch.shape[1]]] * len(rows))  # every target counts
        loss = step(batch, lengths)
        mx.eval(state, loss)
        losses.append(loss.item())
    return losses


def test_orchard_follows_mlx_lm_step_for_step(job, tmp_path, monkeypatch):
    monkeypatch.setattr(cl, "CHUNK_BYTES", 4 * 64 * 16)  # 16 rows a chunk: 4 chunks a batch
    job.lora.dropout = 0.0
    job.lora.target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                               "down_proj"]  # fmt: skip
    job.optim.schedule, job.optim.warmup_steps = "constant", 0
    job.optim.weight_decay, job.optim.grad_clip = 0.0, 0.0
    job.run.steps, job.run.batch_size, job.run.grad_accum = STEPS, BATCH, 1
    job.run.val_every = job.run.checkpoint_every = 0
    items = synthetic_items(STEPS * BATCH, length=17)
    items = [(tokens, np.ones_like(w)) for tokens, w in items]  # mlx-lm masks no prompt here
    ours, theirs = tiny_lora_model(job), tiny_lora_model(job)  # identical adapters (the seed)
    a = dict(tree_flatten(ours.trainable_parameters()))
    assert all(
        mx.array_equal(v, dict(tree_flatten(theirs.trainable_parameters()))[k])
        for k, v in a.items()
    )
    assert cl.takes_chunked_loss(ours)

    train(job, ours, items, None, FixedBatches(), tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    orchard = [
        r["train_loss"] for r in sorted(rows, key=lambda r: r["step"]) if r.get("kind") == "train"
    ]
    mlx_lm = mlx_lm_losses(theirs, items, job)

    assert len(orchard) == STEPS and orchard[-1] < orchard[0] - 0.05  # it learns
    np.testing.assert_allclose(orchard, mlx_lm, rtol=1e-5)
    # Adam moves each weight by about lr a step whatever the gradient's size, so float order
    # shows most where a gradient is near zero: the weights agree to 0.1% of the steps' reach
    b = dict(tree_flatten(theirs.trainable_parameters()))
    reach = job.optim.learning_rate * STEPS
    for k, v in dict(tree_flatten(ours.trainable_parameters())).items():
        np.testing.assert_allclose(
            np.array(v), np.array(b[k]), rtol=0, atol=1e-3 * reach, err_msg=k
        )
