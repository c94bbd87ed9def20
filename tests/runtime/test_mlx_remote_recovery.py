"""dist.mode 'mlx' on paired network agents: a lost agent leaves its peers stuck inside MLX's
collective, which nothing in their process can interrupt. Stop makes each agent kill its stuck
job process, and the group re-forms in fresh job processes on the same curve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.cli.pair_cmd import pair_main
from engine.rpc.paired_client import connect_paired
from engine.runtime import start_run
from engine.trust import open_trust_home
from tests.runtime.helpers import reference_run, tiny_job, train_losses
from tests.runtime.test_recovery import Recorder, kill
from tests.worker.remote_procs import start_agent

STEPS = 12


def _ring_port(address: str) -> int:
    client, _ = connect_paired(address, open_trust_home(), timeout_s=30)
    try:
        return client.describe()["ring_port"]
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mlx_on_paired_agents_re_forms_after_a_lost_agent(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHARD_HOME", str(tmp_path / "coord"))
    monkeypatch.delenv("ORCHARD_WORKER_TOKEN", raising=False)
    reference = train_losses(reference_run(tiny_job(tmp_path / "ref", STEPS), tmp_path / "ref"))
    agents = [start_agent(tmp_path / f"agent{i}", host="127.0.0.1") for i in range(3)]
    try:
        addresses = [f"127.0.0.1:{a.port}" for _, a in agents]
        for (_, agent), address in zip(agents, addresses, strict=True):
            assert pair_main(address, agent.code) == 0
        over = {"dist.hosts": addresses, "dist.mode": "mlx", "run.checkpoint_every": 4,
                "dist.step_timeout_s": 60.0, "dist.rejoin": False}  # fmt: skip
        rec = Recorder(after_step=5)
        handle = start_run(tiny_job(tmp_path, STEPS, **over), rec, data_dir=tmp_path / "cache")
        assert rec.reached.wait(240), "no training step within 240 s"
        t_kill = kill(agents[2][0].proc.pid, mid_collective=False)
        result = handle.wait(300)
        assert result is not None and result.status == "finished", result
        info = rec.recovery()
        assert info["lost"] == [addresses[2]] and info["workers"] == 2
        print(f"\nmlx on agents, one killed: detection {info['detected_at'] - t_kill:.2f}s, "
              f"kill->next completed step {rec.first_step_after(t_kill) - t_kill:.2f}s")  # fmt: skip
        np.testing.assert_allclose(train_losses(result.run_dir), reference, rtol=1e-4)
        # MLX's ring listened on the ports the survivors hold on their host and report
        ring = json.loads((Path(result.run_dir) / "mlx_hostfile.json").read_text())
        assert ring == [[f"127.0.0.1:{_ring_port(a)}"] for a in addresses[:2]], ring
    finally:
        for proc, _ in agents:
            proc.close()
