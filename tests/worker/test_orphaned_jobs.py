"""A network agent whose coordinator dies ends the orphaned job and turns idle again.

Real processes over paired TLS on loopback: a coordinator process sets a job up on an
`orchard worker` agent and is killed -9, once with a Step in flight (the agent ends the job as
soon as gRPC cancels the call) and once between calls (the job lease runs out). The agent's job
process must be gone, Describe must say idle, and a new coordinator must get a new job; stale
calls of the dead coordinators' jobs must not touch it.
"""

from __future__ import annotations

import json
import signal
import time

import grpc
import pytest

from engine.rpc.paired_client import connect_paired
from engine.rpc.worker_client import WorkerCallError
from engine.trust import open_trust_home
from tests.worker.agent_fixtures import paired_agent_at
from tests.worker.remote_jobs import job_pids, set_up_job, silent_peer, wait_gone, wait_reached
from tests.worker.remote_procs import LineProcess, json_line

LEASE_S = 6.0  # short for the test; the agent's default is minutes


@pytest.fixture
def paired_agent(tmp_path, coordinator_home):
    """An agent with a short job lease, paired with this test's trust folder (which the
    coordinator processes share through ORCHARD_HOME)."""
    with paired_agent_at(tmp_path / "agent", LEASE_S) as found:
        yield found


def _coordinator(tmp_path, name: str, address: str, netns: str | None = None) -> LineProcess:
    argv = ["-m", "tests.worker.orphan_coordinator", address, str(tmp_path / name)]
    coord = LineProcess(argv, tmp_path / "coord", netns, log=tmp_path / f"{name}.log")
    coord.wait_for(json_line(ready=True), 60)
    return coord


def _kill_and_time(coord: LineProcess, pid: int, timeout: float) -> float:
    """Seconds from the coordinator's kill -9 until the agent's job process ``pid`` is gone."""
    t0 = time.monotonic()
    coord.proc.send_signal(signal.SIGKILL)
    wait_gone(pid, timeout)
    return time.monotonic() - t0


def _busy(address: str) -> bool:
    client, _ = connect_paired(address, open_trust_home(), timeout_s=30)
    try:
        return client.describe()["busy"]
    finally:
        client.close()


@pytest.mark.slow  # three job set-ups in the agent's child processes: about 30 s
@pytest.mark.timeout(240)
def test_a_killed_coordinators_job_ends_and_the_agent_takes_a_new_one(paired_agent, tmp_path):
    agent, address = paired_agent
    sock, silent = silent_peer()
    opened = []  # rank 0's connection to its silent peer: closing it would fail the Step
    figures = {}
    try:
        # 1. Killed with a Step in flight: the cancelled call ends the job at once.
        a = _coordinator(tmp_path, "a", address)
        try:
            a.send(f"setup orphan-step {silent}")
            job_a = a.wait_for(json_line(job_id=None), 90)["job_id"]
            pid_a = job_pids(agent.log_path)[-1]
            a.send("step 0")
            opened.append(wait_reached(sock, 120))  # the Step is in the agent, waiting
            assert _busy(address)
            figures["mid-step"] = _kill_and_time(a, pid_a, 4 * LEASE_S)
        finally:
            a.close()
        log = agent.log_path.read_text()
        assert f"ending job {job_a}" in log and "Step call was cancelled" in log, log[-2000:]
        assert figures["mid-step"] < LEASE_S / 2  # the cancel ended it, not the lease
        assert not _busy(address)

        # 2. Killed between calls: nothing is in flight, so the lease ends the job.
        b = _coordinator(tmp_path, "b", address)
        try:
            b.send("setup orphan-idle")
            job_b = b.wait_for(json_line(job_id=None), 90)["job_id"]
            b.send("step 0")
            assert b.wait_for(json_line(step=0), 30)["ok"]
            pid_b = job_pids(agent.log_path)[-1]
            assert pid_b != pid_a and _busy(address)  # a Describe does not renew the lease
            figures["between calls"] = _kill_and_time(b, pid_b, 4 * LEASE_S)
        finally:
            b.close()
        log = agent.log_path.read_text()
        assert f"ending job {job_b}" in log and "(job lease)" in log, log[-2000:]
        assert not _busy(address)

        # 3. A new coordinator gets a new job; the dead ones' stale calls leave it alone.
        client, _ = connect_paired(address, open_trust_home(), timeout_s=30)
        try:
            job_c = set_up_job(client, tmp_path / "c", "new-run")
            assert job_c not in (job_a, job_b) and client.describe()["busy"] is True
            client.job_id = job_a  # a Stop from the run of dead coordinator A: ignored
            client.stop("stale")
            client.job_id = job_b
            with pytest.raises(WorkerCallError) as e:
                client.step(0, 0.01)
            assert e.value.job_lost and e.value.code == grpc.StatusCode.ABORTED
            assert f"job {job_b} is no longer on this worker" in e.value.details
            assert "no call from its coordinator" in e.value.details
            assert f"it now runs job {job_c}" in e.value.details
            client.job_id = job_c
            assert client.step(0, 0.01).tokens > 0
            assert client.keep_alive() is True
        finally:
            client.close()
    finally:
        for s in [*opened, sock]:
            s.close()
    print(json.dumps({"coordinator kill -9 -> job process gone (s)": figures,
                      "lease_s": LEASE_S}))  # fmt: skip
