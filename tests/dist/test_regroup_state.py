"""What a regroup relies on: a step that fails mid-collective leaves the optimizer at the
last completed step, and ZeRO-1's moment shards are cut again for the smaller group from
the survivors' shards plus the snapshot (engine/runtime/coordinator.py puts them together)."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
import pytest

from engine.config import OptimSpec
from engine.dist.dist_optimizer import DistributedAdamW
from engine.dist.group import Group, as_f32
from engine.dist.mailbox import CollectiveError
from engine.dist.shards import shard_bounds
from engine.runtime.full_state import FullState, from_survivors, split

N = 10


class EchoGroup(Group):
    """A unit-test group in which every rank sent the same buffer (sum = size x buffer);
    ``fail`` makes the next collective fail as one whose peer was lost."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size, self.fail, self.closed = rank, size, False, False

    def _check(self) -> None:
        if self.fail:
            raise CollectiveError("collective op 1 aborted: a peer was lost")

    def all_reduce(self, buf: Any) -> np.ndarray:
        self._check()
        return as_f32(buf) * self.size

    def reduce_scatter(self, buf: Any, bounds=None) -> np.ndarray:
        self._check()
        a, b = self.segments(as_f32(buf).size, bounds)[self.rank]
        return as_f32(buf)[a:b] * self.size

    def all_gather(self, shard: Any, n: int) -> np.ndarray:
        self._check()
        return np.resize(as_f32(shard), n)  # every rank sent the same shard

    def broadcast(self, buf: Any, root: int = 0) -> np.ndarray:
        self._check()
        return as_f32(buf).copy()

    def close(self) -> None:
        self.closed = True


def _grads(step: int) -> dict[str, mx.array]:
    return {"w": mx.array(np.linspace(-1, 1, N, dtype=np.float32) * (step + 1))}


def _state(opt: DistributedAdamW) -> dict[str, Any]:
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in opt.state_dict().items()}


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(np.asarray(a[k]), np.asarray(b[k])), k


def test_a_step_that_fails_mid_collective_leaves_the_last_completed_step():
    group = EchoGroup(0, 3)
    opt = DistributedAdamW(group, "all-reduce", OptimSpec(), {"w": mx.zeros((N,))})
    opt.step(_grads(0), 1.0, 4, 0.1)
    before = _state(opt)
    group.fail = True
    with pytest.raises(CollectiveError):
        opt.step(_grads(1), 1.0, 4, 0.1)
    _same(_state(opt), before)  # parameters, moments, both step counters
    group.fail = False  # the same step again (in a regrouped group): as if it never failed
    opt.step(_grads(1), 1.0, 4, 0.1)
    clean = DistributedAdamW(EchoGroup(0, 3), "all-reduce", OptimSpec(), {"w": mx.zeros((N,))})
    for s in range(2):
        clean.step(_grads(s), 1.0, 4, 0.1)
    _same(_state(opt), _state(clean))


def test_zero1_shards_are_cut_again_from_survivors_and_the_snapshot():
    """Three ranks lose rank 1: ranks 0 and 2 keep their old shards aside; the coordinator
    joins them with the snapshot's values for rank 1's old shard and splits for two."""
    m_now = np.arange(N, dtype=np.float32) + 100  # the survivors' moments (last step)
    m_snap = np.arange(N, dtype=np.float32)  # an older snapshot's
    old = shard_bounds(N, 3)
    states = []
    for old_rank, new_rank in ((0, 0), (2, 1)):
        g = EchoGroup(old_rank, 3)
        opt = DistributedAdamW(g, "reduce-scatter", OptimSpec(), {"w": mx.zeros((N,))})
        lo, hi = old[old_rank]
        opt.load_state_dict({"mode": "reduce-scatter", "size": 3, "lo": lo, "hi": hi,
                             "params": np.ones(N, np.float32), "steps": 5, "adam_step": 5,
                             "m": m_now[lo:hi], "v": m_now[lo:hi] * 2})  # fmt: skip
        opt.regroup(EchoGroup(new_rank, 2))
        assert g.closed and (opt.lo, opt.hi) == shard_bounds(N, 2)[new_rank]
        meta, tensors = {}, {}
        for k, v in opt.state_dict().items():
            (tensors if isinstance(v, np.ndarray) else meta)[k] = v
        states.append(({**meta, "step": 5}, tensors))
    snap = FullState(step=4, params=np.zeros(N, np.float32), m=m_snap, v=m_snap * 2,
                     adam_step=4, opt_steps=4)  # fmt: skip
    full, stale = from_survivors(states, snap)
    lo1, hi1 = old[1]
    want = m_now.copy()
    want[lo1:hi1] = m_snap[lo1:hi1]  # only the lost shard is older
    assert np.array_equal(full.m, want) and np.array_equal(full.v, want * 2)
    assert stale == hi1 - lo1 and full.adam_step == 5 and full.step == 5
    assert np.array_equal(full.params, np.ones(N, np.float32))  # the survivors' parameters
    for r, (meta, tensors) in enumerate(split(full, "reduce-scatter", 2)):
        lo, hi = shard_bounds(N, 2)[r]
        assert (meta["lo"], meta["hi"]) == (lo, hi) and np.array_equal(tensors["m"], want[lo:hi])


def test_the_parameter_server_cannot_move_to_another_rank():
    opt = DistributedAdamW(EchoGroup(1, 3), "parameter-server", OptimSpec(), {"w": mx.zeros((N,))})
    opt.load_state_dict({"mode": "parameter-server", "size": 3, "lo": 0, "hi": 0, "steps": 5,
                         "adam_step": 5, "params": np.ones(N, np.float32),
                         "m": np.zeros(0, np.float32), "v": np.zeros(0, np.float32)})  # fmt: skip
    with pytest.raises(ValueError, match="must stay rank 0"):
        opt.regroup(EchoGroup(0, 2))  # a worker with no moments would become the server
    server = DistributedAdamW(
        EchoGroup(0, 3), "parameter-server", OptimSpec(), {"w": mx.zeros((N,))}
    )
    server.regroup(EchoGroup(0, 2))  # the server stays rank 0: it keeps its state
    assert (server.lo, server.hi) == (0, N)


@pytest.mark.parametrize("mode", ["parameter-server", "reduce-scatter", "all-reduce"])
def test_a_worker_set_up_ahead_takes_any_rank_and_keeps_nothing_aside(mode):
    """A worker that is back is set up as a group of one while the group trains on; at the
    join it regroups into its rank: no state of its own yet, so any role fits, and ZeRO-1
    keeps no shard aside (its zeros must never stand for a peer's moments)."""
    opt = DistributedAdamW(EchoGroup(0, 1), mode, OptimSpec(), {"w": mx.zeros((N,))})
    opt.regroup(EchoGroup(2, 3))
    want = {"parameter-server": (0, 0), "reduce-scatter": shard_bounds(N, 3)[2]}.get(mode, (0, N))
    assert (opt.lo, opt.hi) == want and opt.previous is None
    assert opt.adamw.size == want[1] - want[0]


def test_a_late_failure_of_the_old_groups_stream_does_not_fail_the_new_group():
    """A regroup reuses the worker's mailbox: a send of the old group that fails afterwards
    (a peer already on the new token refused it) must not abort the new group's step."""
    from engine.dist.mailbox import Mailbox

    mailbox = Mailbox("old")
    mailbox.set_token("new")
    mailbox.fail(CollectiveError("send to rank 0 failed: wrong group token"), token=b"old")
    mailbox.put(1, 0, 0, 0, 1, b"x", "uint8")
    assert bytes(mailbox.take(1, 0, 0, timeout=1.0)[0]) == b"x"
    mailbox.fail(CollectiveError("send to rank 0 failed"), token=b"new")
    with pytest.raises(CollectiveError, match="aborted"):
        mailbox.take(2, 0, 0, timeout=1.0)


def _zero1(rank: int, size: int, m: np.ndarray) -> DistributedAdamW:
    """A ZeRO-1 optimizer holding its shard of moments ``m`` (v = 2m) at step 5."""
    opt = DistributedAdamW(
        EchoGroup(rank, size), "reduce-scatter", OptimSpec(), {"w": mx.zeros((N,))}
    )
    lo, hi = shard_bounds(N, size)[rank]
    opt.load_state_dict({"mode": "reduce-scatter", "size": size, "lo": lo, "hi": hi,
                         "params": np.ones(N, np.float32), "steps": 5, "adam_step": 5,
                         "m": m[lo:hi], "v": m[lo:hi] * 2})  # fmt: skip
    return opt


def test_a_peer_reads_the_shard_kept_from_before_the_regroup_until_the_next_step():
    """A worker joins: rank 1 of 2 regroups as rank 1 of 3; its peers re-cut their shards
    from its old one (state_part) while it loads its new one, so that one stays until the
    next completed step."""
    m = np.arange(N, dtype=np.float32) + 100
    opt = _zero1(1, 2, m)  # holds [5, 10)
    opt.regroup(EchoGroup(1, 3))  # now owns [4, 7), its old shard kept aside
    part = opt.state_part(params=True, lo=5, hi=7)
    np.testing.assert_array_equal(part["m"], m[5:7])
    np.testing.assert_array_equal(part["params"], np.ones(N, np.float32))
    assert (part["steps"], part["adam_step"]) == (5, 5)
    with pytest.raises(ValueError, match=r"moments \[4, 6\): not held here .*\[5, 10\)"):
        opt.state_part(False, 4, 6)  # its new shard's moments are not loaded yet: never zeros
    opt.load_state_dict({"mode": "reduce-scatter", "size": 3, "lo": 4, "hi": 7,
                         "params": np.ones(N, np.float32), "steps": 5, "adam_step": 5,
                         "m": m[4:7], "v": m[4:7] * 2}, keep_previous=True)  # fmt: skip
    np.testing.assert_array_equal(opt.state_part(False, 8, 10)["m"], m[8:10])  # still served
    np.testing.assert_array_equal(opt.state_part(False, 4, 6)["v"], m[4:6] * 2)  # the new one
    with pytest.raises(ValueError, match=r"moments \[3, 6\): not held here .*\[4, 7\) and, from "
                       r"before its last regroup, \[5, 10\)"):  # fmt: skip
        opt.state_part(False, 3, 6)
    opt.step(_grads(5), 1.0, 4, 0.1)
    assert opt.previous is None  # a completed step: the old shard is gone
    with pytest.raises(ValueError, match="not held here"):
        opt.state_part(False, 8, 10)


def test_a_regroup_after_a_pulled_shard_keeps_that_shard_not_the_older_one():
    """A worker is lost right after a join, before a step: the shard each pulled is real
    (of the same step) and is what the next re-cut starts from."""
    m = np.arange(N, dtype=np.float32) + 100
    opt = _zero1(1, 2, m)
    opt.regroup(EchoGroup(1, 3))
    opt.load_state_dict({"mode": "reduce-scatter", "size": 3, "lo": 4, "hi": 7,
                         "params": np.ones(N, np.float32), "steps": 5, "adam_step": 5,
                         "m": m[4:7], "v": m[4:7] * 2}, keep_previous=True)  # fmt: skip
    opt.regroup(EchoGroup(1, 2))
    state = opt.state_dict()
    assert (state["prev_lo"], state["prev_hi"]) == (4, 7)
    np.testing.assert_array_equal(state["prev_m"], m[4:7])


def test_a_second_regroup_before_the_recut_keeps_the_shard_with_the_real_moments():
    """A worker is lost while another joins: the survivors regroup again before any shard
    was loaded; what they kept must still be their last real shard, not the zeros since."""
    m = np.arange(N, dtype=np.float32) + 100
    opt = _zero1(0, 2, m)  # [0, 5)
    opt.regroup(EchoGroup(0, 3))
    opt.regroup(EchoGroup(0, 2))
    state = opt.state_dict()
    assert (state["prev_lo"], state["prev_hi"]) == (0, 5)
    np.testing.assert_array_equal(state["prev_m"], m[0:5])
