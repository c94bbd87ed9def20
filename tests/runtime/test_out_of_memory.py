"""The memory guard for real: a step past a worker's memory limit ends the run failed, with a
message naming memory, in seconds (not a hung step, not a machine in swap)."""

from __future__ import annotations

import time

import pytest

from engine.runtime import start_run
from engine.worker.memory_guard import LIMIT_ENV
from tests.runtime.helpers import tiny_job
from tests.worker.test_lifeline import wait_gone


@pytest.mark.slow
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


def test_the_guard_exit_is_read_as_memory_and_other_exits_are_not(tmp_path):
    """memory_failure on real exited processes: the guard's exit code and log line name
    memory (at SetupJob as at a step); any other exit is left to recovery."""
    import subprocess
    import sys
    from types import SimpleNamespace

    from engine.runtime.out_of_memory import memory_failure
    from engine.worker.memory_guard import MEMORY_EXIT_CODE

    def worker(code: int, line: str) -> SimpleNamespace:
        log = tmp_path / f"w{code}.log"
        log.write_text(f"2026 worker[1] INFO loading\n2026 worker[1] ERROR x: {line}\n")
        proc = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
        proc.wait(30)
        return SimpleNamespace(proc=proc, log_path=log, pid=proc.pid)

    crashed = SimpleNamespace(local=[worker(1, "boom")], addresses=["127.0.0.1:1"], size=1)
    assert memory_failure(crashed) == ""
    line = (
        "memory limit: this worker's step holds 2.00 GiB of MLX memory, over its limit of 1.00 GiB"
    )
    guard = SimpleNamespace(local=[worker(1, "boom"), worker(MEMORY_EXIT_CODE, line)],
                            addresses=["127.0.0.1:1", "127.0.0.1:2"], size=2)  # fmt: skip
    message = memory_failure(guard)
    assert message.startswith(f"worker 127.0.0.1:2: {line}.") and "QLoRA" in message
    remote = RuntimeError("worker mac:50051: Step: ABORTED: job lost: memory limit: the worker's")
    assert memory_failure(SimpleNamespace(local=[], addresses=[], size=1), [remote]).startswith(
        "worker mac:50051: Step: ABORTED: job lost: memory limit:"
    )
