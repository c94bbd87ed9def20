"""The memory guard for real: a step past a worker's memory limit ends the run failed, with a
message naming memory, in seconds (not a hung step, not a machine in swap)."""

from __future__ import annotations

import time

import pytest

from engine.runtime import start_run
from engine.worker.memory_guard import LIMIT_ENV
from tests.runtime.helpers import tiny_job
from tests.worker.test_lifeline import wait_gone

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_a_step_over_the_memory_limit_fails_the_run_naming_memory(tmp_path, monkeypatch):
    # 48 MiB holds the model, the data and the optimizer; a step of 32 sequences of the demo
    # (~1 GiB of activations by the estimate) does not. The workers inherit the cap.
    monkeypatch.setenv(LIMIT_ENV, "48")
    job = tiny_job(tmp_path / "runs", steps=5, **{"run.batch_size": 64, "data.max_seq_len": 512})
    t0 = time.monotonic()
    handle = start_run(job, data_dir=tmp_path / "cache")
    result = handle.wait(180)
    assert result is not None, "the run did not end"
    assert result.status == "failed", result
    assert "memory limit: this worker's step holds" in result.message
    assert "over its limit of 0.05 GiB" in result.message
    assert "gradient accumulation" in result.message  # what to change
    assert result.step == 0
    assert wait_gone([w.pid for w in handle._coordinator.cluster.local], 15) == []
    print(f"out-of-memory run ended {time.monotonic() - t0:.1f}s after start")
