"""fp16 in the distributed path: the worker's dynamic loss scale skips an overflowing step,
backs off, travels with GetState/PutState, and a 2-worker fp16 run keeps it in checkpoints."""

import math

import numpy as np
import pytest

from engine.events import MetricEvent
from engine.runtime import start_run
from engine.train.checkpoint import load_latest_checkpoint
from engine.worker.training import TrainingJob
from tests.runtime.helpers import tiny_job


def _job(tmp_path):
    job = tiny_job(tmp_path, 4, **{"run.precision": "fp16", "dist.workers": 1})
    return TrainingJob.build(job.to_toml(), 0, 1, ["self"], {}, None, "")


@pytest.mark.timeout(120)
def test_overflow_skips_the_step_backs_off_and_the_scale_is_part_of_the_state(tmp_path):
    tj = _job(tmp_path)
    # a token-summed loss overflows fp16 at the starting scale: it backs off until it fits
    for step in range(12):
        got = tj.step(step, 1e-3)
        if not got.skipped:
            break
    assert not got.skipped and math.isfinite(got.grad_norm) and got.loss_scale < 2.0**10
    before, skips = np.array(tj.optimizer.params), tj.loss_scale.state.skipped_steps
    tj.loss_scale.state.scale = 2.0**24  # loss sum x 2^24 overflows fp16 (max 65504)
    over = tj.step(step + 1, 1e-3)
    assert over.skipped and over.loss_scale == 2.0**24
    np.testing.assert_array_equal(np.array(tj.optimizer.params), before)  # nothing applied
    assert tj.loss_scale.scale == 2.0**23 and tj.loss_scale.state.skipped_steps == skips + 1
    meta, tensors = tj.get_state()
    assert meta["loss_scale"]["scale"] == 2.0**23
    other = _job(tmp_path)
    other.put_state(meta, tensors)
    assert other.loss_scale.state == tj.loss_scale.state
    np.testing.assert_array_equal(np.array(other.optimizer.params), np.array(tj.optimizer.params))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_worker_fp16_run_reports_and_checkpoints_its_loss_scale(tmp_path):
    rows = []
    job = tiny_job(
        tmp_path, 6, **{"run.precision": "fp16", "dist.workers": 2, "run.checkpoint_every": 3}
    )
    result = start_run(job, lambda e: rows.append(e) if isinstance(e, MetricEvent) and e.kind == "train" else None,
                       data_dir=tmp_path / "cache").wait(240)  # fmt: skip
    assert result.status == "finished", result
    scales = [r.values["loss_scale"] for r in rows]
    assert len(scales) == 6 and scales[0] == 2.0**10
    assert all(math.isfinite(r.values["train_loss"]) for r in rows)
    saved = load_latest_checkpoint(result.run_dir).meta["loss_scale"]
    assert saved["scale"] in (scales[-1], scales[-1] / 2, scales[-1] * 2)  # after the last update
    assert "skipped_steps" in saved
