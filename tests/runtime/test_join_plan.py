"""Who takes which part of the state from whom when workers join (engine/runtime/join_plan.py),
and how a worker checks and joins what it pulled (engine/worker/peer_state.py): pure parts."""

from __future__ import annotations

import numpy as np
import pytest

from engine.dist.shards import shard_bounds
from engine.runtime.full_state import moment_range
from engine.runtime.join_plan import plan_pulls
from engine.worker.errors import InvalidRequest, OutOfOrder
from engine.worker.peer_state import Slice, assemble, check_pull, requests

MODES = ["all-reduce", "ring", "parameter-server", "reduce-scatter"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n, before, world", [(1000, 2, 3), (1000, 1, 3), (1001, 3, 4), (5, 4, 7)])
def test_every_worker_gets_its_whole_range_from_peers_that_hold_it(mode, n, before, world):
    pulls = plan_pulls(mode, n, before, world)
    held = [moment_range(mode, r, before, n) for r in range(before)]
    for rank in range(world):
        if rank < before and mode != "reduce-scatter":
            assert rank not in pulls  # it holds what it needs: nothing moves to it
            continue
        pull = pulls[rank]
        lo, hi = moment_range(mode, rank, world, n)
        at = lo
        for src, a, b in pull.moments:  # the pieces tile its range, each from its holder
            assert a == at and held[src][0] <= a <= b <= held[src][1]
            at = b
        assert at == hi
        if rank < before:
            assert pull.params_from == -1  # a survivor keeps its parameters
        else:
            assert 0 <= pull.params_from < before


def test_zero1_moves_only_what_a_worker_did_not_hold():
    n = 1200
    pulls = plan_pulls("reduce-scatter", n, 2, 3)
    moved = sum(b - a for r, p in pulls.items() for src, a, b in p.moments if src != r)
    old, new = shard_bounds(n, 2), shard_bounds(n, 3)
    least = sum(
        (b - a) - max(0, min(b, old[r][1]) - max(a, old[r][0])) if r < 2 else b - a
        for r, (a, b) in enumerate(new)
    )
    assert moved == least == 600  # half the moments; a relay moves all of them twice


def test_newcomers_spread_over_the_workers_in_the_group():
    pulls = plan_pulls("all-reduce", 100, 3, 6)
    assert [pulls[r].params_from for r in (3, 4, 5)] == [0, 1, 2]
    assert [pulls[r].peers(r) for r in (3, 4, 5)] == [{0}, {1}, {2}]
    with pytest.raises(ValueError, match="before <= world"):
        plan_pulls("all-reduce", 100, 3, 2)


def _own(rank=2, world=3, lo=0, hi=10, step=0, n=10):
    return {"rank": rank, "world": world, "mode": "all-reduce", "n": n, "lo": lo, "hi": hi,
            "step": step}  # fmt: skip


def test_a_pull_that_cannot_give_a_whole_state_is_refused_before_any_fetch():
    check_pull(_own(), 5, 0, [Slice(0, 0, 4), Slice(1, 4, 10)])
    cases = [
        (InvalidRequest, "params_from: rank 3", (5, 3, [Slice(0, 0, 10)])),
        (InvalidRequest, r"moments\[1\]: \[5, 10\) does not go on from 4", (5, 0, [Slice(0, 0, 4), Slice(1, 5, 10)])),
        (InvalidRequest, "the pieces end at 9", (5, 0, [Slice(0, 0, 9)])),
        (InvalidRequest, r"moments\[0\]: rank 4", (5, 0, [Slice(4, 0, 10)])),
        (OutOfOrder, "own state is of step 0, not 5", (5, -1, [Slice(0, 0, 10)])),
        (OutOfOrder, "own state is of step 0, not 5", (5, 0, [Slice(2, 0, 10)])),
    ]  # fmt: skip
    for error, match, args in cases:
        with pytest.raises(error, match=match):
            check_pull(_own(), *args)


def test_assemble_takes_the_parameters_of_one_peer_and_the_moments_of_each_piece():
    rng = np.random.default_rng(0)
    p, m, v = (rng.standard_normal(10).astype(np.float32) for _ in range(3))
    counters = {"steps": 5, "adam_step": 4, "step": 5, "loss_scale": None}
    parts = {0: ({**counters, "lo": 0, "hi": 4}, {"params": p, "m": m[:4], "v": v[:4]}),
             1: ({**counters, "lo": 4, "hi": 10}, {"m": m[4:], "v": v[4:]})}  # fmt: skip
    slices = [Slice(0, 0, 4), Slice(1, 4, 10)]
    assert requests(2, 0, slices) == {0: (True, 0, 4), 1: (False, 4, 10)}
    meta, tensors = assemble(_own(), parts, 0, slices)
    assert (meta["rank"], meta["world"], meta["lo"], meta["hi"]) == (2, 3, 0, 10)
    assert (meta["steps"], meta["adam_step"], meta["step"]) == (5, 4, 5)
    for k, want in (("params", p), ("m", m), ("v", v)):
        np.testing.assert_array_equal(tensors[k], want)
    short = {0: (parts[0][0], {**parts[0][1], "params": p[:9]}), 1: parts[1]}
    with pytest.raises(InvalidRequest, match="rank 0 sent 9 parameters, this job has 10"):
        assemble(_own(), short, 0, slices)
