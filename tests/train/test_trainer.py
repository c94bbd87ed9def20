"""The training loop: exact resume, metrics.jsonl, validation, stop, mixed precision."""

import threading

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from engine.events import MetricEvent, ProgressEvent, StateEvent
from engine.train import list_checkpoints, read_metrics, train
from tests.train.conftest import BatchSampler, collate, synthetic_items, tiny_lora_model

TRAIN = synthetic_items(24, seed=1)
VALID = synthetic_items(6, seed=2)


def _run(job, run_dir, steps, resume=False, stop_after=None, sink=None):
    model = tiny_lora_model(job, seed=5)
    job.run.steps = steps
    stop = threading.Event()
    events = []

    def record(e):
        events.append(e)
        if stop_after is not None and isinstance(e, ProgressEvent) and e.step >= stop_after:
            stop.set()

    result = train(
        job, model, TRAIN, VALID, BatchSampler([len(t) for t, _ in TRAIN], job.run.batch_size, job.run.seed), run_dir,
        sink or record, stop, collate=collate, pad_id=0, resume=resume,
    )  # fmt: skip
    return model, result, events


def _train_losses(run_dir):
    return {
        r["step"]: r["train_loss"]
        for r in read_metrics(run_dir / "metrics.jsonl")
        if r["kind"] == "train"
    }


def test_resume_continues_the_same_curve_exactly(job, tmp_path):
    """2k steps straight == k steps, stop, resume in a fresh model, k more (dropout on)."""
    k = 5
    job.lora.dropout = 0.2
    job.run.checkpoint_every = 100  # only the stop and the end write checkpoints
    straight_dir, split_dir = tmp_path / "straight", tmp_path / "split"
    m1, r1, _ = _run(job, straight_dir, 2 * k)
    _, r2a, ev = _run(job, split_dir, 2 * k, stop_after=k)
    assert r2a.stopped and r2a.step == k
    assert any(isinstance(e, StateEvent) and e.state == "checkpointed" for e in ev)
    m2, r2b, _ = _run(job, split_dir, 2 * k, resume=True)
    assert not r2b.stopped and r2b.step == 2 * k
    straight, split = _train_losses(straight_dir), _train_losses(split_dir)
    assert sorted(split) == list(range(1, 2 * k + 1))  # no duplicated or missing rows
    for s in range(1, 2 * k + 1):
        assert split[s] == pytest.approx(straight[s], abs=1e-6), s
    assert straight[2 * k] < straight[1]
    p1 = dict(tree_flatten(m1.trainable_parameters()))
    p2 = dict(tree_flatten(m2.trainable_parameters()))
    for name in p1:
        np.testing.assert_allclose(np.array(p2[name]), np.array(p1[name]), atol=1e-6)
    # dropout matters: without restoring the RNG the curve would differ
    job.lora.dropout = 0.2
    other = tmp_path / "other"
    job.run.seed = 1
    _run(job, other, k + 1)
    assert _train_losses(other)[k + 1] != pytest.approx(straight[k + 1], abs=1e-6)


def test_metrics_rows_validation_and_checkpoint_rotation(job, tmp_path):
    events = []
    _run(job, tmp_path, 8, sink=events.append)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    train_rows = [r for r in rows if r["kind"] == "train"]
    val_rows = [r for r in rows if r["kind"] == "val"]
    assert [r["step"] for r in train_rows] == list(range(1, 9))
    for key in (
        "train_loss",
        "learning_rate",
        "grad_norm",
        "tokens_per_s",
        "peak_memory_gb",
        "step_time_s",
    ):
        assert all(np.isfinite(r[key]) for r in train_rows), key
    assert [r["step"] for r in val_rows] == [4, 8] and all(r["val_loss"] > 0 for r in val_rows)
    # warmup 2 then cosine: rises, then falls to the floor
    lrs = [r["learning_rate"] for r in train_rows]
    assert lrs[0] < lrs[1] < lrs[2] and lrs[-1] == pytest.approx(1e-3)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step_0000008", "step_0000006"]  # every 3 and at the end, keep 2
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_0000008"
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert progress[-1].step == 8 and progress[-1].eta_s == 0
    assert sum(isinstance(e, MetricEvent) for e in events) == len(rows)


@pytest.mark.parametrize("precision, dtype", [("bf16", mx.bfloat16), ("fp16", mx.float16)])
def test_mixed_precision_keeps_fp32_masters_and_learns(job, tmp_path, precision, dtype):
    job.run.precision = precision
    job.lora.dropout = 0.0
    model, result, _ = _run(job, tmp_path, 8)
    assert all(v.dtype == dtype for _, v in tree_flatten(model.trainable_parameters()))
    arrays = mx.load(str(list_checkpoints(tmp_path)[0] / "state.safetensors"))
    assert all(v.dtype == mx.float32 for k, v in arrays.items() if k.startswith("param."))
    losses = _train_losses(tmp_path)
    assert losses[8] < losses[1]


def test_fp16_overflow_skips_the_step_and_backs_off(job, tmp_path):
    job.run.precision = "fp16"
    job.lora.dropout = 0.0
    model = tiny_lora_model(job, seed=5)
    from engine.train import Updater, cast_for_compute, compute_gradients

    up = Updater(model, job, 4)
    cast_for_compute(model, "fp16")
    up.loss_scale.state.scale = 2.0**40  # overflows fp16 for sure
    before = {k: np.array(v) for k, v in tree_flatten(model.trainable_parameters())}
    _, ntok, grads = compute_gradients(model, [collate(TRAIN[:4], 0)], up.loss_scale_value)
    res = up.apply_update(grads, ntok, 0)
    assert res.skipped and up.loss_scale.scale == 2.0**39
    after = {k: np.array(v) for k, v in tree_flatten(model.trainable_parameters())}
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert up.adamw.steps_applied == 0


def test_total_steps_from_epochs_and_step_seeds(job):
    from engine.train import step_seed, total_steps_for

    job.run.steps = 7
    assert total_steps_for(job, 100) == 7
    job.run.epochs = 1.5
    job.run.batch_size = 8
    assert total_steps_for(job, 100) == 19  # ceil(150 / 8)
    seeds = {step_seed(s, i, r) for s in range(3) for i in range(50) for r in range(4)}
    assert len(seeds) == 3 * 50 * 4


def test_eta_follows_recent_steps_and_ignores_steps_redone_after_a_recovery():
    from engine.train.metrics import Progress

    now = [0.0]
    p = Progress(0, 100, clock=lambda: now[0])
    for step in range(1, 11):  # 2 s per step
        now[0] += 2.0
        e = p.event(step)
    assert e.eta_s == pytest.approx(2.0 * 90)
    now[0] += 30.0  # a recovery: 30 s, then the run goes back to step 8
    e = p.event(8)
    assert e.eta_s == pytest.approx(2.0 * 92)  # the going back is not a step
    for step in range(9, 21):
        now[0] += 2.0
        e = p.event(step)
    assert e.eta_s == pytest.approx(2.0 * 80)
