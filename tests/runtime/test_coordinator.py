"""The coordinator's life cycle: stop with a final checkpoint, exact resume of ZeRO shards,
Ctrl-C to the engine process, and a clear failure message. (kill -9 of an engine process:
tests/worker/test_lifeline.py; kill -9 of a worker: test_recovery.py.)"""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.events import MetricEvent
from engine.runtime import start_run
from engine.train.checkpoint import list_checkpoints, load_latest_checkpoint
from tests.runtime.helpers import tiny_job, train_losses
from tests.worker.test_lifeline import wait_gone

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _after_step(n: int):
    reached = threading.Event()

    def sink(event):
        if isinstance(event, MetricEvent) and event.kind == "train" and event.step >= n:
            reached.set()

    return reached, sink


@pytest.mark.timeout(300)
def test_stop_writes_a_final_checkpoint_and_stops_the_workers(tmp_path):
    reached, sink = _after_step(2)
    handle = start_run(tiny_job(tmp_path, steps=100_000), sink, data_dir=tmp_path / "cache")
    assert reached.wait(240), "no training step within 240 s"
    pids = [w.pid for w in handle._coordinator.cluster.local]
    handle.stop()
    result = handle.wait(120)
    assert result is not None and result.status == "stopped", result
    assert load_latest_checkpoint(result.run_dir).step == result.step >= 2
    assert (result.run_dir / "adapter" / "adapters.safetensors").is_file()
    assert wait_gone(pids, 15) == []


@pytest.mark.timeout(300)
def test_resume_of_zero_shards_continues_the_same_curve(tmp_path):
    over = {"dist.mode": "reduce-scatter", "dist.workers": 2, "run.checkpoint_every": 4,
            "run.keep_checkpoints": 3, "run.name": "zero"}  # fmt: skip
    job = tiny_job(tmp_path, steps=8, **over)
    first = start_run(job, data_dir=tmp_path / "cache").wait(240)
    assert first.status == "finished", first
    full = train_losses(first.run_dir)
    ckpt = load_latest_checkpoint(first.run_dir)
    # the whole moments, joined from the ZeRO shards (any worker count can resume them)
    assert {"params", "m", "v"} <= set(ckpt.arrays) and ckpt.meta["world"] == 2
    assert ckpt.arrays["m"].size == ckpt.arrays["params"].size
    # roll the run folder back to the step-4 checkpoint, as after a crash at step 6
    newest = list_checkpoints(first.run_dir)[0]
    assert newest.name == "step_0000008"
    import shutil

    shutil.rmtree(newest)
    (first.run_dir / "checkpoints" / "latest").write_text("step_0000004\n")
    again = start_run(job, data_dir=tmp_path / "cache", resume_from=first.run_dir).wait(240)
    assert again.status == "finished" and again.step == 8, again
    resumed = train_losses(first.run_dir)
    assert len(resumed) == 8
    np.testing.assert_allclose(resumed[4:], full[4:], rtol=1e-5)


@pytest.mark.timeout(300)
def test_a_failing_setup_ends_the_run_with_the_reason(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n')
    job = tiny_job(tmp_path, steps=3, **{"data.path": str(bad)})
    result = start_run(job, data_dir=tmp_path / "cache").wait(240)
    assert result.status == "failed"
    assert "bad.jsonl" in result.message and "2" in result.message  # file and line named


def _engine(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "runtime" / "run_script.py"),
                             str(tmp_path / "runs"), str(tmp_path / "cache")],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)  # fmt: skip
    line = proc.stdout.readline()
    assert line.startswith("WORKERS="), f"engine printed {line!r}"
    return proc, [int(p) for p in line.strip()[8:].split(",")]


@pytest.mark.timeout(300)
def test_sigint_to_the_engine_checkpoints_and_leaves_no_worker(tmp_path):
    proc, pids = _engine(tmp_path)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert "STATUS=stopped" in out
    assert wait_gone(pids, 15) == []
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert load_latest_checkpoint(run_dir).step >= 1
