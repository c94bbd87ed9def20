"""Local workers run at the CPU priority they were asked for, every thread of them.

On Linux a nice value belongs to each thread, so the test reads every thread's
/proc/<pid>/task/<tid>/stat once the worker serves (its gRPC and MLX threads exist by then),
and with autogroup scheduling the worker's session group, /proc/<pid>/autogroup.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from engine.rpc.auth import new_token
from engine.rpc.worker_client import WorkerClient
from engine.runtime.local_workers import MAX_NICENESS, start_local_worker, stop_local_workers

pytestmark = pytest.mark.timeout(120)


def thread_niceness(pid: int) -> list[int]:
    """The nice value of each thread of ``pid`` (one value per process off Linux)."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.exists():
        return [os.getpriority(os.PRIO_PROCESS, pid)]
    values = []
    for stat in tasks.glob("*/stat"):
        try:
            text = stat.read_text()
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
        # Fields after the command name (which may hold spaces); nice is field 19 overall.
        values.append(int(text.rsplit(")", 1)[1].split()[16]))
    return values


@pytest.mark.parametrize("niceness", [0, 7])
def test_a_local_worker_runs_at_the_asked_niceness(tmp_path, niceness) -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    token = new_token()
    worker = start_local_worker(
        token, tmp_path / "data", tmp_path / "worker.log", timeout_s=60, niceness=niceness
    )
    try:
        with WorkerClient(worker.address, token) as client:
            client.wait_ready(timeout_s=60)  # serving: its threads are up
            values = thread_niceness(worker.pid)
        expected = min(MAX_NICENESS, own + niceness)
        assert len(values) >= (2 if sys.platform == "linux" else 1), values
        assert set(values) == {expected}, f"threads at {values}, asked for {expected}"
        autogroup = Path(f"/proc/{worker.pid}/autogroup")
        if autogroup.exists() and niceness:  # Linux autogroup: its CPU group is lowered too
            assert autogroup.read_text().split()[-1] == str(expected), autogroup.read_text()
        assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the engine itself is untouched
    finally:
        stop_local_workers([worker], grace_s=5)


def test_a_niceness_out_of_range_is_refused_before_anything_starts(tmp_path) -> None:
    with pytest.raises(ValueError, match="niceness is 20; expected 0 to 19"):
        start_local_worker(new_token(), tmp_path / "d", tmp_path / "w.log", niceness=20)
    assert not (tmp_path / "w.log").exists()
