"""Stop on a network agent whose job is stuck in a call where nothing reaches it (MLX's own
collective, in C++) kills the job process after STOP_GRACE_S: the call fails 'job lost' and
the agent takes a new SetupJob at once. A job that does return on Stop is never killed."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from engine.rpc.worker_client import WorkerCallError
from engine.worker.job import STOP_GRACE_S
from tests.worker.agent_fixtures import address_of, frozen_peer
from tests.worker.remote_jobs import alive, job_pids, set_up_job, wait_gone

pytestmark = pytest.mark.timeout(300)


def _blocked_step(client, pool: ThreadPoolExecutor, reached) -> object:
    step = pool.submit(client.step, 0, 0.01, 120.0)
    assert reached.wait(60), "rank 0 never sent its part"
    time.sleep(0.5)  # it now waits for rank 1's part, which never comes
    assert not step.done(), step.result()
    return step


@pytest.mark.slow  # two job set-ups in job processes
def test_stop_kills_a_job_process_stuck_in_a_call_and_the_agent_takes_a_new_job(paired, tmp_path):
    agent, client = paired("w1")
    log = agent.proc.log_path
    with frozen_peer() as (peer, reached), ThreadPoolExecutor(1) as pool:
        set_up_job(client, tmp_path / "runs", "stuck", peers=[address_of(agent), peer])
        pid = job_pids(log)[-1]
        step = _blocked_step(client, pool, reached)
        # stopped, the job process cannot act on the collective's failure the agent forwards:
        # it stays in its call, as a survivor inside MLX's C++ collective does
        os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        client.stop("re-forming the group", timeout_s=30)
        took = time.monotonic() - t0
        with pytest.raises(WorkerCallError) as e:
            step.result(timeout=30)
    assert e.value.code == grpc.StatusCode.ABORTED and e.value.job_lost
    assert "the job process died (exit code -9)" in e.value.details
    wait_gone(pid, 10)
    assert client.describe()["busy"] is False
    assert "killing its process" in log.read_text(errors="replace")
    t1 = time.monotonic()
    set_up_job(client, tmp_path / "runs", "again")  # a fresh process, a fresh group
    setup_s = time.monotonic() - t1
    assert job_pids(log)[-1] != pid
    assert client.step(0, 0.01).tokens > 0
    print(f"\nStop of a stuck job: returned in {took:.2f}s ({took / STOP_GRACE_S:.2f}x the "
          f"{STOP_GRACE_S:g}s grace); the next SetupJob took {setup_s:.2f}s")  # fmt: skip


@pytest.mark.slow  # one job set-up in a job process
def test_stop_of_a_job_that_returns_ends_it_in_order(paired, tmp_path):
    agent, client = paired("w1")
    log = agent.proc.log_path
    with frozen_peer() as (peer, reached), ThreadPoolExecutor(1) as pool:
        set_up_job(client, tmp_path / "runs", "blocked", peers=[address_of(agent), peer])
        pid = job_pids(log)[-1]
        step = _blocked_step(client, pool, reached)
        client.stop("run ended", timeout_s=30)
        with pytest.raises(WorkerCallError) as e:
            step.result(timeout=30)
    # the forwarded failure ended the collective: the call returned, nothing was killed
    assert e.value.code == grpc.StatusCode.INTERNAL and not e.value.job_lost
    assert "worker stopped (run ended)" in e.value.details
    wait_gone(pid, 30)
    assert "killing" not in log.read_text(errors="replace")
    assert client.describe()["busy"] is False and not alive(pid)


def _ring(tmp_path, clients, agents, run_id: str, fn=set_up_job) -> None:
    """Set up a dist.mode 'mlx' ring of the agents; both ranks initialise MLX together, each
    listening on the port its agent holds and reports (as the coordinator builds it)."""
    from engine.dist.mlx_env import write_ring_hostfile

    peers = [address_of(a) for a in agents]
    ring = [f"127.0.0.1:{c.describe()['ring_port']}" for c in clients]
    hostfile = json.dumps(write_ring_hostfile(tmp_path / f"{run_id}.json", ring))
    with ThreadPoolExecutor(len(agents)) as pool:
        jobs = [pool.submit(fn, c, tmp_path / "runs", run_id, peers, 3, r, "mlx", hostfile)
                for r, c in enumerate(clients)]  # fmt: skip
        for j in jobs:
            j.result(timeout=200)


@pytest.mark.slow  # two agents, two MLX ring set-ups: ~40 s
def test_a_survivor_stuck_in_mlx_collective_is_freed_by_stop_and_the_ring_reforms(paired, tmp_path):
    """The remote-mlx recovery the coordinator needs: rank 1 goes silent mid-step, rank 0
    hangs inside MLX's C++ all-reduce; Stop on every worker frees both at once, and setting
    them all up again (a new hostfile: fresh processes, a fresh MLX group) trains on."""
    (a, ca), (b, cb) = paired("a"), paired("b")
    _ring(tmp_path, [ca, cb], [a, b], "ring1")
    with ThreadPoolExecutor(2) as pool:
        first = [pool.submit(c.step, 0, 0.01, 120.0) for c in (ca, cb)]
        losses = [f.result(timeout=120).loss_sum for f in first]
    silent = job_pids(b.proc.log_path)[-1]
    os.kill(silent, signal.SIGSTOP)  # rank 1's machine freezes
    stuck = job_pids(a.proc.log_path)[-1]
    with ThreadPoolExecutor(1) as pool:
        step = pool.submit(ca.step, 1, 0.01, 120.0)
        time.sleep(3.0)  # rank 0 computes, then waits in MLX's all-reduce for rank 1
        assert not step.done(), step.result()
        t0 = time.monotonic()
        for c in (ca, cb):
            c.stop("re-forming the mlx group", timeout_s=30)
        took = time.monotonic() - t0
        with pytest.raises(WorkerCallError) as e:
            step.result(timeout=30)
    assert e.value.job_lost and "exit code -9" in e.value.details
    wait_gone(stuck, 10)
    wait_gone(silent, 10)
    assert not ca.describe()["busy"] and not cb.describe()["busy"]
    _ring(tmp_path, [ca, cb], [a, b], "ring2")
    with ThreadPoolExecutor(2) as pool:
        again = [pool.submit(c.step, 0, 0.01, 120.0) for c in (ca, cb)]
        relosses = [f.result(timeout=120).loss_sum for f in again]
    # the same job from scratch: the re-formed ring repeats the first step exactly
    np.testing.assert_allclose(relosses, losses, rtol=1e-5)
    print(f"\nmlx survivor stuck in a collective: Stop of both ranks took {took:.2f}s "
          f"({took / STOP_GRACE_S:.2f}x the {STOP_GRACE_S:g}s grace); the ring re-formed")  # fmt: skip


@pytest.mark.slow  # one agent, one MLX ring set-up that never completes, one that does
def test_stop_frees_a_setup_job_stuck_in_mlx_group_init(paired, tmp_path):
    """Rank 0 of an MLX ring whose rank 1 never comes waits in MLX's group init inside
    SetupJob; a Stop (without a job id: the coordinator's SetupJob failed) kills that job
    process, SetupJob fails 'job lost' and the agent takes the next SetupJob."""
    from engine.dist.mlx_env import write_ring_hostfile

    agent, client = paired("w1")
    peers = [address_of(agent), "127.0.0.1:1"]
    hostfile = json.dumps(write_ring_hostfile(tmp_path / "ring.json", 2))
    with ThreadPoolExecutor(1) as pool:
        setup = pool.submit(set_up_job, client, tmp_path / "runs", "ring", peers, 3, 0, "mlx",
                            hostfile)  # fmt: skip
        deadline = time.monotonic() + 120
        while not setup_under_way(agent.proc.log_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3.0)  # the job process builds the model, then waits in MLX's init
        assert not setup.done(), setup.result()
        t0 = time.monotonic()
        client.stop("SetupJob timed out", timeout_s=30)
        took = time.monotonic() - t0
        with pytest.raises(WorkerCallError) as e:
            setup.result(timeout=30)
    assert e.value.job_lost and "SetupJob" in e.value.details, e.value
    assert client.describe()["busy"] is False
    set_up_job(client, tmp_path / "runs", "after")
    assert client.step(0, 0.01).tokens > 0
    print(f"\nStop of a SetupJob stuck in MLX's init returned in {took:.2f}s")


def setup_under_way(log_path) -> bool:
    """True once the agent has shipped the job's files (SetupJob is under way)."""
    return "stored tokenizer_config.json" in log_path.read_text(errors="replace")
