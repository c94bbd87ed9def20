"""A network agent keeps one job process warm (training stack imported, idle): SetupJob takes
it instead of spawning and importing MLX, and a new spare starts behind it. Measured against
an agent started with --no-warm-spare (every SetupJob spawns a fresh child)."""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import pytest

from tests.worker.remote_jobs import alive, job_pids, set_up_job

pytestmark = pytest.mark.timeout(400)
_IMPORTED = re.compile(r"job process (\d+) imported the training stack")
ROUNDS = 2


def imported_pids(log_path: Path) -> list[int]:
    """Job processes that finished importing, in the order the agent's log shows them."""
    return [int(p) for p in _IMPORTED.findall(log_path.read_text(errors="replace"))]


def wait_spares(log_path: Path, count: int, timeout: float = 120) -> list[int]:
    """Wait until ``count`` job processes have imported the training stack."""
    deadline = time.monotonic() + timeout
    while len(pids := imported_pids(log_path)) < count:
        assert time.monotonic() < deadline, f"only {pids} imported within {timeout} s"
        time.sleep(0.1)
    return pids


def _timed_setup(client, out: Path, run_id: str) -> float:
    t0 = time.perf_counter()
    set_up_job(client, out, run_id)
    return time.perf_counter() - t0


@pytest.mark.slow  # two agents, four job set-ups, three spare imports: ~60 s
def test_setup_job_takes_the_warm_spare_and_beats_a_cold_start(paired, tmp_path):
    warm_agent, warm = paired("warm")
    cold_agent, cold = paired("cold", "--no-warm-spare")
    warm_log, cold_log = warm_agent.proc.log_path, cold_agent.proc.log_path
    assert imported_pids(cold_log) == []  # no spare, and no import in the agent itself
    warm_s, cold_s = [], []
    for i in range(ROUNDS):
        spare = wait_spares(warm_log, i + 1)[-1]  # the spare is ready: nothing competes
        warm_s.append(_timed_setup(warm, tmp_path / "runs", f"warm{i}"))
        assert job_pids(warm_log)[-1] == spare  # the job runs in the spare it took
        assert warm.step(0, 0.01).tokens > 0
        wait_spares(warm_log, i + 2)  # the next spare, started behind it, is ready too
        cold_s.append(_timed_setup(cold, tmp_path / "runs", f"cold{i}"))
        assert job_pids(cold_log)[-1] == imported_pids(cold_log)[-1]  # imported on demand
    pids = imported_pids(warm_log)
    assert len(set(pids)) == ROUNDS + 1  # every SetupJob took a new process
    assert not alive(pids[0]) and alive(pids[-1])  # the replaced job ended; the spare waits
    w, c = statistics.median(warm_s), statistics.median(cold_s)
    print(f"\nSetupJob on an agent: warm spare {w:.2f}s, cold start {c:.2f}s (median of "
          f"{ROUNDS}); warm/cold = {w / c:.2f}")  # fmt: skip
    assert w < c


@pytest.mark.slow  # one agent, one job set-up
def test_a_spare_that_died_idle_is_replaced_by_a_fresh_process(paired, tmp_path):
    import os
    import signal

    agent, client = paired("w1")
    (spare,) = wait_spares(agent.proc.log_path, 1)
    os.kill(spare, signal.SIGKILL)  # the OOM killer picks the idle spare
    set_up_job(client, tmp_path / "runs", "after")
    job = job_pids(agent.proc.log_path)[-1]
    assert job != spare and alive(job)
    assert client.step(0, 0.01).tokens > 0
    assert "the spare job process died idle" in agent.proc.log_path.read_text(errors="replace")


def test_the_spare_ends_with_its_agent_even_after_kill_9(tmp_path):
    """An idle spare holds no job and must never outlive its agent: it reads its pipe to
    the agent, whose end-of-file (any death of the agent) makes it exit."""
    import os
    import signal

    from tests.worker.remote_jobs import wait_gone
    from tests.worker.remote_procs import start_agent

    proc, _ = start_agent(tmp_path / "w1", host="127.0.0.1")
    try:
        (spare,) = wait_spares(proc.log_path, 1)
        os.kill(proc.proc.pid, signal.SIGKILL)
        wait_gone(spare, 30)
    finally:
        proc.close()
