"""A checkpoint holds the full state (not per-rank shards), so a ZeRO-1 run saved by three
workers resumes on two (same mode) and on one (another mode) on the same loss curve."""

import shutil

import numpy as np
import pytest

from engine.runtime import start_run
from engine.train.checkpoint import list_checkpoints, load_latest_checkpoint
from tests.runtime.helpers import tiny_job, train_losses

pytestmark = pytest.mark.slow


def _roll_back_to(run_dir, step: int) -> None:
    """Leave only the checkpoints up to ``step``, as after a crash just past it."""
    for ckpt in list_checkpoints(run_dir):
        if int(ckpt.name.split("_")[1]) > step:
            shutil.rmtree(ckpt)
    (run_dir / "checkpoints" / "latest").write_text(f"step_{step:07d}\n")


@pytest.mark.timeout(600)
def test_zero_run_on_three_resumes_on_two_and_on_one_worker(tmp_path):
    over = {"dist.mode": "reduce-scatter", "dist.workers": 3, "run.checkpoint_every": 4,
            "run.keep_checkpoints": 3, "run.name": "elastic"}  # fmt: skip
    first = start_run(tiny_job(tmp_path, 8, **over), data_dir=tmp_path / "cache").wait(300)
    assert first.status == "finished", first
    full = train_losses(first.run_dir)
    ckpt = load_latest_checkpoint(first.run_dir)
    assert {"params", "m", "v"} <= set(ckpt.arrays) and ckpt.meta["world"] == 3
    assert ckpt.arrays["m"].size == ckpt.arrays["params"].size  # whole moments, not a shard
    for workers, mode in ((2, "reduce-scatter"), (1, "all-reduce")):
        _roll_back_to(first.run_dir, 4)
        job = tiny_job(tmp_path, 8, **{**over, "dist.workers": workers, "dist.mode": mode})
        again = start_run(job, data_dir=tmp_path / "cache", resume_from=first.run_dir).wait(300)
        assert again.status == "finished" and again.step == 8, again
        resumed = train_losses(first.run_dir)
        assert len(resumed) == 8
        np.testing.assert_allclose(resumed[4:], full[4:], rtol=1e-4, err_msg=f"{workers} x {mode}")
        assert load_latest_checkpoint(first.run_dir).meta["world"] == workers
