"""Stop ends a step that is not finishing: a worker slowed to a crawl (a CPU cgroup with a 1%
quota, as a machine deep in swap) holds step N; after Stop's grace the coordinator kills the
local workers, writes its newer in-memory snapshot as the checkpoint, and the run ends
"stopped". Linux cgroup v1 (/sys/fs/cgroup/cpu) and root; skipped elsewhere."""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path

import pytest

from engine.events import MetricEvent
from engine.runtime import recovery, start_run
from engine.train.checkpoint import load_latest_checkpoint
from tests.runtime.helpers import tiny_job
from tests.worker.test_lifeline import wait_gone

pytestmark = pytest.mark.slow
CPU = Path("/sys/fs/cgroup/cpu")


class Crawl:
    """A CPU cgroup of our own with a 1% quota; removed (its processes moved out) on exit."""

    def __init__(self) -> None:
        self.path = CPU / f"orchard-test-{secrets.token_hex(4)}"

    def __enter__(self) -> Crawl:
        self.path.mkdir()
        (self.path / "cpu.cfs_period_us").write_text("100000")
        (self.path / "cpu.cfs_quota_us").write_text("1000")
        return self

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def __exit__(self, *exc: object) -> None:
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                (CPU / "cgroup.procs").write_text(f"{pid}\n")
            except OSError:  # exited meanwhile
                pass
        self.path.rmdir()


def _can_throttle() -> bool:
    return os.geteuid() == 0 and (CPU / "cgroup.procs").is_file() and os.access(CPU, os.W_OK)


@pytest.mark.skipif(not _can_throttle(), reason="needs root and cgroup v1 cpu")
@pytest.mark.timeout(300)
def test_stop_ends_a_step_that_does_not_finish(tmp_path, monkeypatch):
    monkeypatch.setattr(recovery, "STOP_GRACE_S", 2.0)  # else 10 s, or 3 steps' time
    monkeypatch.setattr(recovery, "STOP_GRACE_STEPS", 0.0)
    steps = threading.Event()
    done: list[int] = []

    def sink(event: object) -> None:
        if isinstance(event, MetricEvent) and event.kind == "train":
            done.append(event.step)
            if event.step >= 2:
                steps.set()

    job = tiny_job(
        tmp_path / "runs", steps=100_000, **{"run.batch_size": 8, "data.max_seq_len": 256}
    )
    handle = start_run(job, sink, data_dir=tmp_path / "cache")
    with Crawl() as crawl:
        assert steps.wait(240), "no training steps within 240 s"
        coordinator = handle._coordinator
        deadline = time.monotonic() + 120  # snapshots come as often as cost 2% of the time
        while coordinator.snapshot.step < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert coordinator.snapshot.step >= 1, "no in-memory snapshot after step 0"
        workers = coordinator.cluster.local
        crawl.add(workers[0].pid)
        time.sleep(0.5)  # the step in flight now crawls
        handle.stop()
        t0 = time.monotonic()
        result = handle.wait(120)
        took = time.monotonic() - t0
    assert result is not None and result.status == "stopped", result
    assert "did not end within" in result.message, result.message
    assert took < 60, f"Stop took {took:.1f}s"
    assert wait_gone([w.pid for w in workers], 15) == []
    # the newest consistent state: the in-memory snapshot, written as the checkpoint
    ckpt = load_latest_checkpoint(result.run_dir)
    assert ckpt.step == result.step and 1 <= ckpt.step <= max(done)
    print(f"stopped {took:.1f}s after Stop; checkpoint at step {ckpt.step} of {max(done)} done")
