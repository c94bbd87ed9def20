"""The coordinator's side of a lost worker (engine/runtime/lost_workers.py), against a
cluster that records its calls: where the survivors stand after the interrupted step decides
what is redone. At the last completed step: only the interrupted step. All past it (the lost
worker's part had gone out): nothing, and their replies stand for the step. At different
steps: the snapshot, in place. The real thing, over real processes:
tests/runtime/test_recovery.py."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from engine.config import JobSpec
from engine.runtime.balance import Split
from engine.runtime.full_state import FullState
from engine.runtime.lost_workers import LostWorkers
from engine.runtime.recovery import WorkerLost
from engine.worker.job import StepResult

N, DONE, SNAP = 12, 5, 4  # steps done when the loss was seen; the snapshot's step
PLAN = Split((2, 2, 1), (1, 1, 1))


@dataclass
class FakeCluster:
    """Three workers; rank 1 is lost. ``at``: the survivors' steps, as Regroup answers."""

    at: list[int]
    size: int = 3
    calls: list[tuple] = field(default_factory=list)
    local: list = field(default_factory=list)
    remote: bool = False
    token: str = ""

    @property
    def addresses(self) -> list[str]:
        return [f"10.0.0.{r}:1" for r in range(self.size)]

    def drop(self, ranks: list[int]) -> list:
        self.calls.append(("drop", ranks))
        self.size -= len(ranks)
        return []

    def regroup(self, ranks=None) -> list[dict[str, Any]]:
        self.calls.append(("regroup",))
        return [{"step": s, "regroup_s": 0.01} for s in self.at]

    def put_states(self, states, ranks=None) -> None:
        self.calls.append(("put_states", [meta["step"] for meta, _ in states]))

    def stop_jobs(self, ranks, reason: str) -> None:
        self.calls.append(("stop_jobs", reason))


class Coordinator(LostWorkers):
    """The parts of the real Coordinator a recovery uses."""

    def __init__(self, at: list[int]):
        self.job = JobSpec().with_overrides(['dist.mode="all-reduce"', "dist.workers=3"])
        self.cluster = FakeCluster(at)
        z = np.zeros(N, np.float32)
        self.snapshot = FullState(step=SNAP, params=z, m=z, v=z, adam_step=SNAP, opt_steps=SNAP)
        self.failures, self.balancer, self.rejoiner, self.run_dir = 0, None, None, None
        self.finished_step = None
        self.notes: list[tuple[str, str, dict | None]] = []
        self.emit = lambda _e: None

    def _note(self, message: str, level: str = "info", running: dict | None = None) -> None:
        self.notes.append((message, level, running))

    def _setup_group(self) -> None:
        self.cluster.calls.append(("setup_group",))


def _reply(step: int, loss: float, tokens: int, group: tuple[float, int]) -> StepResult:
    return StepResult(step, loss, tokens, 1.0, 0.5, 0.2, 1e9, False, 1.0, tokens, 0.4, 0.1,
                      group_loss_sum=group[0], group_tokens=group[1])  # fmt: skip


def _lost(replies: list[StepResult | BaseException | None]) -> WorkerLost:
    """Rank 1 lost during step DONE + 1; the others' Step calls ended with ``replies``."""
    calls = []
    for r in replies:
        f: Future = Future()
        if isinstance(r, BaseException):
            f.set_exception(r)
        elif r is not None:
            f.set_result(r)
        calls.append(f)
    return WorkerLost([1], ["10.0.0.1:1"], 0.0, "Step: UNAVAILABLE", calls)


def _recovered(c: Coordinator) -> dict:
    (detail,) = [r for _, _, r in c.notes if r and r.get("recovered")]
    return detail


def test_survivors_at_the_last_completed_step_redo_only_the_interrupted_one():
    c = Coordinator(at=[DONE, DONE])
    assert c._recover(_lost([None, None, None]), DONE, 0.0, DONE, PLAN) == DONE
    assert c.finished_step is None
    d = _recovered(c)
    assert d["regrouped"] and (d["redo_from"], d["steps_redone"]) == (DONE, 1)
    assert [n for n, *_ in c.cluster.calls] == ["drop", "regroup"]  # no state moved


def test_survivors_past_the_interrupted_step_stand_for_it_with_the_groups_loss():
    c = Coordinator(at=[DONE + 1, DONE + 1])
    group = (30.0, 12)  # the three workers' loss sum and tokens, as the gradients carried them
    lost = _lost([_reply(DONE, 10.0, 4, group), None, _reply(DONE, 9.0, 3, group)])
    assert c._recover(lost, DONE, 0.0, DONE, PLAN) == DONE  # the run loop takes the step
    f = c.finished_step
    assert f is not None and [o.loss_sum for o in f.outs] == [10.0, 9.0]
    assert f.plan == Split((2, 1), (1, 1))  # the survivors' part of the step's split
    assert f.dt == pytest.approx(0.5 + 0.2 - 0.1)
    d = _recovered(c)
    assert (d["failed_step"], d["redo_from"], d["steps_redone"]) == (DONE + 1, DONE + 1, 0)
    assert "nothing to redo: the survivors finished step 6" in c.notes[-1][0]
    assert [n for n, *_ in c.cluster.calls] == ["drop", "regroup"]


@pytest.mark.parametrize(
    "replies",
    [
        [_reply(DONE, 10.0, 4, (30.0, 12)), None, _reply(DONE, 9.0, 3, (29.0, 12))],  # disagree
        [_reply(DONE, 10.0, 4, (0.0, 0)), None, _reply(DONE, 9.0, 3, (0.0, 0))],  # older workers
        [_reply(DONE, 10.0, 4, (30.0, 12)), None, TimeoutError("no reply")],
    ],
    ids=["group-loss-differs", "no-group-loss", "a-reply-missing"],
)
def test_survivors_past_the_step_without_a_sound_reply_take_the_snapshot_in_place(replies):
    c = Coordinator(at=[DONE + 1, DONE + 1])
    assert c._recover(_lost(replies), DONE, 0.0, DONE, PLAN) == SNAP
    assert c.finished_step is None
    assert ("put_states", [SNAP, SNAP]) in c.cluster.calls
    assert "setup_group" not in [n for n, *_ in c.cluster.calls]  # nothing reloaded


def test_survivors_at_different_steps_take_the_snapshot_in_place():
    c = Coordinator(at=[DONE, DONE + 1])
    lost = _lost([RuntimeError("send to rank 1 failed"), None, _reply(DONE, 9.0, 3, (30.0, 12))])
    assert c._recover(lost, DONE, 0.0, DONE, PLAN) == SNAP
    d = _recovered(c)
    assert d["regrouped"] and d["survivors_at"] == [DONE, DONE + 1]
    assert (d["redo_from"], d["steps_redone"]) == (SNAP, DONE + 1 - SNAP)
    assert f"take the step-{SNAP} snapshot and redo steps {SNAP + 1}..{DONE + 1}" in c.notes[-1][0]
    assert [n for n, *_ in c.cluster.calls] == ["drop", "regroup", "put_states"]
