"""A coordinator cut off by the network (link down, no goodbye) while a Step is in flight: the
agent's keepalive finds the silent connection, gRPC cancels the Step and the agent ends the
job, long before the job lease; once the link is back the coordinator hears "job lost" for
its old job and sets a new one up on the same worker.

The coordinator lives in namespace A, the agent (and the silent rank 1 that keeps the Step
waiting) in namespace B; the veth cable between them is unplugged on A's side.
"""

from __future__ import annotations

import json

import pytest

from tests.discovery.conftest import netns_pair  # noqa: F401 - fixture
from tests.worker.remote_jobs import job_pids, wait_gone
from tests.worker.remote_procs import LineProcess, json_line, start_agent
from tests.worker.test_orphaned_jobs import _coordinator

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.timeout(300)]
LEASE_S = 120.0  # far above keepalive's ~15 s, so the lease cannot be what ends the job
_LISTEN = (  # rank 1: prints its port, then "reached" once rank 0's collective connects
    "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(16); "
    "print(s.getsockname()[1], flush=True); c = s.accept(); print('reached', flush=True); "
    "time.sleep(600)"
)


def test_a_cut_off_coordinators_step_ends_the_job_by_keepalive(netns_pair, tmp_path):  # noqa: F811
    started: list[LineProcess] = []
    try:
        proc, agent = start_agent(tmp_path / "agent", netns=netns_pair.b, job_lease_s=LEASE_S)
        started.append(proc)
        silent = LineProcess(["-c", _LISTEN], tmp_path / "silent", netns=netns_pair.b)
        started.append(silent)
        silent_port = int(silent.wait_for(lambda s: s.isdigit() and s, 30))
        address = f"{netns_pair.addr_b}:{agent.port}"
        coord = _coordinator(tmp_path, "coord", address, netns=netns_pair.a)
        started.append(coord)
        coord.send(f"pair {agent.code}")
        assert coord.wait_for(json_line(pair=None), 30)["pair"] == 0
        coord.send(f"setup cut 127.0.0.1:{silent_port}")  # rank 1 listens in B, never answers
        old_job = coord.wait_for(json_line(job_id=None), 120)["job_id"]
        pid = job_pids(proc.log_path)[-1]
        coord.send("step 0")
        silent.wait_for(lambda s: s == "reached", 120)  # the Step is in the agent, waiting

        netns_pair.link("a", up=False)
        cut_to_gone = wait_gone(pid, LEASE_S / 2)  # by keepalive, not by the lease
        log = proc.log_path.read_text()
        assert f"ending job {old_job}" in log and "Step call was cancelled" in log, log[-2000:]
        failed = coord.wait_for(json_line(step=0), 60)  # the coordinator's own keepalive
        assert failed["ok"] is False and failed["code"] == "UNAVAILABLE", failed

        netns_pair.link("a", up=True)
        coord.send("describe")
        assert coord.wait_for(json_line(busy=None), 60)["busy"] is False
        coord.send("step 1")  # its old job: gone, and the worker says so
        stale = coord.wait_for(json_line(step=1), 60)
        assert stale["job_lost"] and "Step call was cancelled" in stale["details"], stale
        coord.send("setup again")  # the worker is alive: set the job up again
        assert coord.wait_for(json_line(job_id=None), 120)["job_id"] != old_job
        coord.send("step 0")
        assert coord.wait_for(json_line(step=0), 60)["ok"]
        print(json.dumps({"link down -> job process gone (s)": round(cut_to_gone, 2)}))
    finally:
        for p in reversed(started):
            p.close()
