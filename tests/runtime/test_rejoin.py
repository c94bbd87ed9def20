"""Lost workers come back: a killed local worker is restarted and rejoins at a step boundary,
taking the current state from a peer, worker to worker, while the others keep theirs (no
PutState); a remote worker that froze (a Mac asleep) is found by the heartbeat, dropped, and
rejoins once it answers again. The curve is the one of a run that never failed (the global
batch does not depend on the number of workers), and nothing is redone at a rejoin."""

from __future__ import annotations

import os
import signal
import time

import grpc
import numpy as np
import pytest

from engine.events import MetricEvent, StateEvent
from engine.runtime import start_run
from engine.runtime.cluster import ProtocolMismatch, check_protocol
from tests.runtime.helpers import reference_run, tiny_job, train_losses
from tests.runtime.test_recovery import Recorder
from tests.worker.test_lifeline import wait_gone

STEPS = 30
TIMEOUT_S = 60.0  # dist.step_timeout_s: detection must not wait for it


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    work = tmp_path_factory.mktemp("ref")
    return train_losses(reference_run(tiny_job(work / "runs", STEPS), work / "reference"))


class PacedRecorder(Recorder):
    """After a recovery, holds the run at each step until the lost worker is back and set
    up (a slow GUI could hold it as long), so the run is not over before it rejoins on a
    loaded machine. ``handle``: the run's, once started."""

    handle = None

    def __call__(self, event: object) -> None:
        super().__call__(event)
        if isinstance(event, MetricEvent) and event.kind == "train":
            if _details(self, "recovered") and not _details(self, "rejoined"):
                rejoiner = self.handle._coordinator.rejoiner
                deadline = time.monotonic() + 180
                while not rejoiner.waiting and time.monotonic() < deadline:
                    time.sleep(0.05)


def _details(rec: Recorder, key: str) -> list[dict]:
    return [e.detail for _, e in rec.events if isinstance(e, StateEvent) and e.detail.get(key)]


def _workers_per_step(rec: Recorder) -> dict[int, int]:
    return {
        e.step: int(e.values["workers"])
        for _, e in rec.events
        if isinstance(e, MetricEvent) and e.kind == "train"
    }


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_local_worker_is_restarted_and_rejoins_on_the_same_curve(tmp_path, reference):
    over = {"dist.workers": 3, "run.checkpoint_every": 4, "dist.step_timeout_s": TIMEOUT_S}
    rec = PacedRecorder(after_step=5)
    handle = rec.handle = start_run(
        tiny_job(tmp_path, STEPS, **over), rec, data_dir=tmp_path / "cache"
    )
    assert rec.reached.wait(240), "no training step within 240 s"
    first = list(handle._coordinator.cluster.local)
    os.kill(first[1].pid, signal.SIGKILL)
    result = handle.wait(300)
    assert result is not None and result.status == "finished", result
    lost, back = _details(rec, "recovered"), _details(rec, "rejoined")
    assert [d["workers"] for d in lost] == [2]
    assert len(back) == 1 and back[0]["workers"] == 3, back
    per_step = _workers_per_step(rec)
    assert per_step[STEPS] == 3 and per_step[back[0]["step"] + 1] == 3, per_step
    print(f"\nlocal worker killed after step 5: back after step {back[0]['step']}, state "
          f"from a peer in {back[0]['state_s']:.3f}s ({back[0]['state_bytes']} bytes)")  # fmt: skip
    # the newcomer's state came from a peer: were it wrong (its fresh LoRA weights, or no
    # moments), its part of each later step would move the curve off the reference
    np.testing.assert_allclose(train_losses(result.run_dir), reference, rtol=1e-4)
    log_txt = (result.run_dir / "log.txt").read_text()
    assert "rejoined after step" in log_txt and "the others kept their loaded model" in log_txt
    assert "worker to worker" in log_txt
    assert lost[0]["regrouped"]
    assert back[0]["state"] == "peer" and back[0]["put_state"] == [], back[0]
    assert back[0]["prepared"], back[0]  # set up while the others trained on
    assert back[0]["state_bytes"] == 3 * 4 * 8960  # parameters and both moments, once
    for r in (0, 2):  # the survivors loaded the model once: at the loss and at the rejoin
        wlog = (result.run_dir / "workers" / f"worker{r}.log").read_text()  # they regrouped
        assert wlog.count(" ready in ") == 1 and wlog.count("regrouped as rank") == 2
        assert "put by the coordinator" not in wlog and "pulled from peers" not in wlog
    newcomer = (result.run_dir / "workers" / "worker3.log").read_text()  # the restarted one
    step = back[0]["step"]
    assert "rank 0/1 ready in" in newcomer and "regrouped as rank 2/3" in newcomer
    assert f"state of step {step} pulled from peers" in newcomer, newcomer[-2000:]
    assert "put by the coordinator" not in newcomer
    served = [(r, (result.run_dir / "workers" / f"worker{r}.log").read_text()) for r in (0, 2)]
    assert [r for r, w in served if f"serving state fetch from rank 2: step {step}," in w] != []
    everyone = [w.pid for w in first + handle._coordinator.cluster.local]
    assert wait_gone(everyone, 15) == []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_frozen_remote_worker_is_found_by_heartbeat_and_rejoins_when_it_wakes(
    tmp_path, reference, monkeypatch
):
    """dist.hosts: workers this engine did not start. SIGSTOP keeps the sockets open, so no
    call fails: only the heartbeat can tell, well before the step deadline. The workers
    here answer PullState as one of an older Orchard would (UNIMPLEMENTED), so the
    rejoin falls back to the coordinator relaying the state, to the newcomer only."""
    from engine.rpc.auth import TOKEN_ENV, new_token
    from engine.rpc.worker_client import WorkerCallError, WorkerClient
    from engine.runtime.local_workers import start_local_worker, stop_local_workers

    def older(client: WorkerClient, *args: object, **kwargs: object) -> dict:
        raise WorkerCallError(client.address, "PullState", grpc.StatusCode.UNIMPLEMENTED,
                              "Method not found!")  # fmt: skip

    monkeypatch.setattr(WorkerClient, "pull_state", older)

    token = new_token()
    workers = [
        start_local_worker(token, tmp_path / "w", tmp_path / f"w{r}.log", 3) for r in range(3)
    ]
    monkeypatch.setenv(TOKEN_ENV, token)
    try:
        over = {"dist.hosts": [w.address for w in workers], "run.checkpoint_every": 4,
                "dist.step_timeout_s": TIMEOUT_S}  # fmt: skip
        rec = PacedRecorder(after_step=5)
        handle = rec.handle = start_run(tiny_job(tmp_path, STEPS, **over), rec,
                                        data_dir=tmp_path / "cache")  # fmt: skip
        assert rec.reached.wait(240), "no training step within 240 s"
        t_freeze = time.time()
        os.kill(workers[2].pid, signal.SIGSTOP)
        deadline = time.monotonic() + 120
        while not _details(rec, "recovered") and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(workers[2].pid, signal.SIGCONT)  # the Mac wakes up
        result = handle.wait(300)
        assert result is not None and result.status == "finished", result
        (lost,) = _details(rec, "recovered")
        assert lost["lost"] == [workers[2].address] and lost["workers"] == 2
        detect = lost["detected_at"] - t_freeze
        print(f"\nfrozen remote worker: detected {detect:.2f}s after SIGSTOP "
              f"(step deadline {TIMEOUT_S:.0f}s)")  # fmt: skip
        assert detect < TIMEOUT_S / 2  # the heartbeat, not the deadline
        (back,) = _details(rec, "rejoined")
        assert back["rejoined"] == [workers[2].address] and back["workers"] == 3
        assert back["state"] == "coordinator" and back["put_state"] == [2], back
        np.testing.assert_allclose(train_losses(result.run_dir), reference, rtol=1e-4)
    finally:
        for w in workers:
            os.kill(w.pid, signal.SIGCONT)
        stop_local_workers(workers, grace_s=10)


class _Speaks:
    def __init__(self, version: str):
        self.address, self.version = "10.0.0.9:50051", version

    def describe(self) -> dict:
        return {"protocol_version": self.version}


def test_a_worker_on_another_protocol_is_refused_before_any_file_is_shipped():
    from engine.machine import PROTOCOL_VERSION

    check_protocol(_Speaks(PROTOCOL_VERSION))
    with pytest.raises(ProtocolMismatch) as e:
        check_protocol(_Speaks("0"))
    msg = str(e.value)
    assert "10.0.0.9:50051 speaks orchard protocol 0" in msg and PROTOCOL_VERSION in msg


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_only_worker_killed_is_restarted_and_the_run_finishes(tmp_path, reference):
    over = {"dist.workers": 1, "run.checkpoint_every": 4, "dist.step_timeout_s": TIMEOUT_S}
    rec = Recorder(after_step=5)
    handle = start_run(tiny_job(tmp_path, STEPS, **over), rec, data_dir=tmp_path / "cache")
    assert rec.reached.wait(240), "no training step within 240 s"
    (only,) = handle._coordinator.cluster.local
    os.kill(only.pid, signal.SIGKILL)
    result = handle.wait(240)
    assert result is not None and result.status == "finished", result
    (lost,) = _details(rec, "recovered")
    assert lost["lost"] == [only.address] and lost["workers"] == 1
    np.testing.assert_allclose(train_losses(result.run_dir), reference, rtol=1e-4)
