"""The coordinator's side of a rejoin (engine/runtime/returning_workers.py), against a
cluster that records its calls: the state goes worker to worker, and every way that fails
falls back as it should (the coordinator relays; a newcomer that cannot join is left out;
a worker of the group that is gone ends the rejoin as a lost worker). The real thing, over
real processes: tests/runtime/test_rejoin.py and tests/worker/test_pull_state.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest

from engine.config import JobSpec
from engine.rpc.worker_client import WorkerCallError
from engine.runtime.full_state import FullState, split
from engine.runtime.recovery import WorkerLost
from engine.runtime.returning_workers import ReturningWorkers

N, STEP = 12, 6


def _unimplemented(call: str) -> WorkerCallError:
    return WorkerCallError("10.0.0.3:1", call, grpc.StatusCode.UNIMPLEMENTED, "older Orchard")


@dataclass
class FakeCluster:
    """Three workers in the group; ``fail`` names calls that raise (call -> exception)."""

    mode: str
    size: int = 3
    group_token: str = "old"
    fail: dict[str, Exception] = field(default_factory=dict)
    calls: list[tuple] = field(default_factory=list)
    gone: set[int] = field(default_factory=set)  # ranks whose health check fails
    refuse_put_to: list[int] | None = None  # PutState to exactly these ranks fails
    refuse_regroup_of: list[int] | None = None  # Regroup of exactly these ranks fails

    @property
    def addresses(self) -> list[str]:
        return [f"10.0.0.{r}:1" for r in range(self.size)]

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise self.fail[name]

    def add(self, members: list) -> None:
        self.size += len(members)
        self.group_token = "new"

    def ship_files(self) -> dict:
        return {}

    def setup(self, files, run_id, mlx_hostfile="", ranks=None) -> list[dict]:
        self._call("setup", ranks)
        return [{"trainable_params": N, "train_items": 10, "message": ""}]

    def regroup(self, ranks=None) -> list[dict]:
        self._call("regroup", ranks)
        if self.refuse_regroup_of is not None and ranks == self.refuse_regroup_of:
            raise _unimplemented("Regroup")
        return [{"step": STEP, "regroup_s": 0.0} for _ in ranks or range(self.size)]

    def pull_states(self, pulls, step, state_bytes) -> list[dict]:
        self._call("pull_states", sorted(pulls), step)
        return [{"step": step, "pull_s": 0.0, "received_bytes": 8} for _ in pulls]

    def some_ranked(self, ranks, fn) -> list:
        ranks = list(ranks)
        self._call("get_state", ranks)
        if any(r in self.gone for r in ranks):
            raise WorkerCallError("10.0.0.1:1", "GetState", grpc.StatusCode.UNAVAILABLE, "gone")
        return [(dict(meta, step=STEP), t) for meta, t in split(_full(), self.mode, 3)]

    def put_states(self, states, ranks=None) -> None:
        self._call("put_states", ranks, len(states))
        if self.refuse_put_to is not None and ranks == self.refuse_put_to:
            raise RuntimeError("disk full")

    def leave_out(self, before: int, token: str) -> None:
        self.calls.append(("leave_out", before, token))
        self.size, self.group_token = before, token

    def drop(self, ranks: list[int]) -> list:
        self.calls.append(("drop", ranks))
        self.size -= len(ranks)
        return []

    def reachable(self, rank: int, timeout_s: float = 2.0) -> bool:
        return rank not in self.gone


def _full() -> FullState:
    rng = np.random.default_rng(1)
    p, m, v = (rng.standard_normal(N).astype(np.float32) for _ in range(3))
    return FullState(step=STEP, params=p, m=m, v=np.abs(v), adam_step=STEP, opt_steps=STEP)


class Coordinator(ReturningWorkers):
    """The parts of the real Coordinator a rejoin uses."""

    def __init__(self, mode: str, **fail: Exception):
        self.job = JobSpec().with_overrides([f'dist.mode="{mode}"'])
        self.cluster = FakeCluster(mode, fail=fail)
        self.snapshot, self.balancer, self.run_dir = _full(), None, _Dir()
        self.notes: list[tuple[str, str, dict | None]] = []

    def _note(self, message: str, level: str = "info", running: dict | None = None) -> None:
        self.notes.append((message, level, running))

    def _setup_group(self) -> None:
        self.cluster.calls.append(("setup_group", self.cluster.size))


class _Dir:
    name = "run"


@dataclass
class Back:
    """A worker that came back (engine/runtime/cluster.Member's fields that matter here)."""

    client: Any = field(default_factory=lambda: type("C", (), {"address": "10.0.0.9:1"})())
    ready_at: float = 1.0
    prepared_s: float = 0.0  # > 0: set up ahead, while the group trained on


def _names(c: Coordinator) -> list[str]:
    return [call[0] for call in c.cluster.calls]


def _joined(c: Coordinator) -> dict:
    (detail,) = [r for _, _, r in c.notes if r and r.get("rejoined")]
    return detail


def test_the_newcomer_pulls_from_a_peer_and_the_others_get_nothing():
    c = Coordinator("all-reduce")
    c._rejoin([Back()], STEP)
    assert _names(c) == ["setup", "regroup", "pull_states"]
    assert c.cluster.calls[2] == ("pull_states", [3], STEP)  # only the newcomer pulls
    d = _joined(c)
    assert d["state"] == "peer" and d["put_state"] == [] and d["workers"] == 4
    assert d["back_at"] == 1.0 and d["state_bytes"] == 8


def test_a_newcomer_set_up_ahead_only_regroups_and_pulls_at_the_join():
    c = Coordinator("all-reduce")
    c._rejoin([Back(prepared_s=2.0)], STEP)
    assert c.cluster.calls == [("regroup", [3]), ("regroup", [0, 1, 2]),
                               ("pull_states", [3], STEP)]  # fmt: skip
    d = _joined(c)
    assert d["prepared"] and d["prepare_s"] == 2.0 and d["state"] == "peer"


def test_a_newcomer_set_up_ahead_that_cannot_regroup_sets_up_at_the_join():
    c = Coordinator("all-reduce")
    c.cluster.refuse_regroup_of = [3]  # its job ended while it waited
    c._rejoin([Back(prepared_s=2.0)], STEP)
    assert _names(c) == ["regroup", "setup", "regroup", "pull_states"]
    assert _joined(c)["state"] == "peer"


def test_zero1_every_worker_recuts_its_shard_worker_to_worker():
    c = Coordinator("reduce-scatter")
    c._rejoin([Back()], STEP)
    assert c.cluster.calls[2] == ("pull_states", [0, 1, 2, 3], STEP)
    assert _joined(c)["put_state"] == []


def test_a_pull_that_fails_falls_back_to_the_coordinator_relaying_the_state():
    c = Coordinator("all-reduce", pull_states=_unimplemented("PullState"))
    c._rejoin([Back()], STEP)
    assert _names(c) == ["setup", "regroup", "pull_states", "get_state", "put_states"]
    assert c.cluster.calls[3] == ("get_state", [0, 1, 2])  # the group's state, once
    assert c.cluster.calls[4] == ("put_states", [3], 4)  # to the newcomer only
    d = _joined(c)
    assert d["state"] == "coordinator" and d["put_state"] == [3]


def test_a_group_that_cannot_regroup_is_set_up_again_with_the_relayed_state():
    c = Coordinator("all-reduce", regroup=_unimplemented("Regroup"))
    c._rejoin([Back()], STEP)
    assert _names(c) == ["setup", "regroup", "get_state", "setup_group", "put_states"]
    assert c.cluster.calls[-1] == ("put_states", None, 4)  # everyone, set up afresh
    assert _joined(c)["state"] == "coordinator"


def test_a_newcomer_that_cannot_set_up_is_left_out_and_the_group_goes_on_untouched():
    c = Coordinator("all-reduce", setup=RuntimeError("model did not load"))
    c._rejoin([Back()], STEP)
    assert _names(c) == ["setup", "leave_out"]
    assert c.cluster.calls[-1] == ("leave_out", 3, "old")  # the old group and its token
    (message, level, _), *_ = c.notes
    assert level == "warning" and "could not rejoin: model did not load" in message


def test_a_newcomer_that_cannot_take_even_the_relayed_state_is_left_out():
    c = Coordinator("all-reduce", pull_states=_unimplemented("PullState"))
    c.cluster.refuse_put_to = [3]  # the newcomer's disk is full
    calls = c.cluster.calls
    c._rejoin([Back()], STEP)
    # the others go on in place (a regroup, no reload) with the state the coordinator holds
    assert _names(c)[-4:] == ["put_states", "drop", "regroup", "put_states"]
    assert calls[-3] == ("drop", [3]) and calls[-1] == ("put_states", None, 3)
    assert not [r for _, _, r in c.notes if r and r.get("rejoined")]
    assert any("could not rejoin: disk full" in m for m, _, _ in c.notes)


def test_a_worker_of_the_group_gone_meanwhile_ends_the_rejoin_as_a_lost_worker():
    c = Coordinator("all-reduce", pull_states=_unimplemented("PullState"))
    c.cluster.gone = {1}
    with pytest.raises(WorkerLost) as e:
        c._rejoin([Back()], STEP)
    assert e.value.ranks == [1] and "lost while a worker rejoined" in str(e.value)
    assert ("drop", [3]) in c.cluster.calls  # the newcomer went again first


class _Client:
    def __init__(self, address: str):
        self.address = address

    def close(self) -> None:
        pass


class _Reconnecting:
    """A cluster whose departed workers answer at once; ``prepare`` fails when told to."""

    def __init__(self, fail: bool):
        self.fail, self.discarded = fail, []

    def reconnect(self, gone, timeout_s: float):
        from engine.runtime.cluster import Member

        return Member(_Client(gone.address))

    def prepare(self, member, run_id: str, stopped) -> None:
        assert not stopped()  # the run goes on
        if self.fail:
            raise RuntimeError("disk full")
        assert run_id == "run-1"
        member.prepared_s = 1.5

    def discard(self, member) -> None:
        self.discarded.append(member)


@pytest.mark.parametrize("fail", [False, True])
def test_a_worker_that_is_back_is_set_up_ahead_else_it_sets_up_at_the_join(fail):
    import time

    from engine.runtime.cluster import Departed
    from engine.runtime.rejoin import Rejoiner

    cluster = _Reconnecting(fail)
    rejoiner = Rejoiner(cluster, "run-1", prepare=True)
    try:
        rejoiner.departed([Departed("10.0.0.5:1", local=False)])
        deadline = time.monotonic() + 10
        while not rejoiner.waiting and time.monotonic() < deadline:
            time.sleep(0.01)
        (member,) = rejoiner.ready()
        assert member.client.address == "10.0.0.5:1" and member.ready_at > 0
        assert member.prepared_s == (0.0 if fail else 1.5)  # handed over either way
    finally:
        rejoiner.close()
