"""The split of the global batch: optimal whole-sequence shares, memory-bound micro-batches,
re-splits from measured step times (with hysteresis), and what a resume needs.

Unit tests on plain numbers; the end-to-end ones (real workers) are in test_uneven_split.py.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest

from engine.config import ConfigError, JobSpec, resolve_model_path
from engine.model.inspect import inspect_model
from engine.model.memory import estimate_memory
from engine.runtime.balance import (
    HYSTERESIS,
    Balancer,
    Probe,
    Split,
    largest_micro_batch,
    makespan,
    memory_caps,
    micro_batch_counts,
    recorded_splits,
    shares_for,
)


def brute_force_makespan(batch: int, speeds: list[float], overheads=None) -> float:
    best = math.inf
    for shares in itertools.product(range(batch + 1), repeat=len(speeds)):
        if sum(shares) == batch:
            best = min(best, makespan(shares, speeds, overheads))
    return best


@pytest.mark.parametrize("batch, world", [(5, 2), (5, 3), (8, 3), (16, 5), (2, 3), (0, 2)])
def test_equal_speeds_split_like_array_split(batch, world):
    want = [len(p) for p in np.array_split(np.arange(batch), world)]
    assert shares_for(batch, [2.5] * world) == want


def test_shares_are_optimal_whole_sequences():
    rng = np.random.default_rng(0)
    for _ in range(60):
        world, batch = int(rng.integers(1, 4)), int(rng.integers(1, 13))
        speeds = list(rng.uniform(0.05, 5.0, size=world))
        shares = shares_for(batch, speeds)
        assert sum(shares) == batch and min(shares) >= 0
        assert makespan(shares, speeds) == pytest.approx(brute_force_makespan(batch, speeds))
        overheads = list(rng.uniform(0.0, 2.0, size=world))  # each worker's fixed cost
        shares = shares_for(batch, speeds, overheads)
        assert sum(shares) == batch
        assert makespan(shares, speeds, overheads) == pytest.approx(
            brute_force_makespan(batch, speeds, overheads)
        )
    assert shares_for(8, [3, 1]) == [6, 2]
    assert shares_for(65536, [1.0, 2.0, 1.0]) == [16384, 32768, 16384]


def test_a_worker_gets_none_only_when_it_is_better_out():
    assert shares_for(4, [4, 1]) == [3, 1]  # same step time either way: the slow one helps
    assert shares_for(5, [10, 1]) == [5, 0]  # one sequence there outlasts the whole step
    assert shares_for(5, [1, 0, math.nan, math.inf]) == [5, 0, 0, 0]  # unusable speeds
    assert shares_for(3, [0, 0]) == [2, 1]  # nothing known: equal
    with pytest.raises(ValueError):
        shares_for(3, [])


def test_micro_batches_follow_memory_not_the_share():
    # the share stays; a worker whose memory holds 2 sequences cuts 7 into 4 micro-batches
    assert micro_batch_counts([7, 1, 0], [2, None, 3], accum=1) == [4, 1, 1]
    assert micro_batch_counts([7, 1], [None, None], accum=3) == [3, 1]  # never more than its share
    assert micro_batch_counts([6], [4], accum=2) == [2]  # accum already keeps it within memory


def test_largest_micro_batch_is_the_memory_estimates_edge():
    info = inspect_model(resolve_model_path("demo"))
    job = JobSpec().with_overrides(["run.batch_size=64", "data.max_seq_len=256"])

    def need(m):
        j = job.with_overrides([f"run.batch_size={2 * m}", "run.grad_accum=2"])
        return estimate_memory(info, j, workers=1).total_bytes

    free = need(10) / 0.8 + 1  # room for exactly 10 within the headroom
    assert largest_micro_batch(info, job, free) == 10
    assert largest_micro_batch(info, job, need(1) / 0.8 - 1) == 0
    assert largest_micro_batch(info, job, 1e15) == 64  # never more than the batch
    # two workers on one host share its memory; unknown memory means no cap
    caps = memory_caps(job, info, ["h:1", "h:2", "g:1"], [int(2 * free), int(2 * free), None])
    assert caps == [10, 10, None]


@dataclass
class Out:  # the StepResult fields the balancer reads
    compute_s: float
    work_tokens: int


def simulate(b: Balancer, true_speed: list[float], steps: int, jitter: float = 0.0,
             seq_len: int = 100, seed: int = 0, overhead: float = 0.05) -> list[str]:  # fmt: skip
    """Run ``steps`` steps of workers that compute ``true_speed`` tokens/s plus a fixed
    ``overhead`` each; returns the balancer's re-split lines."""
    rng = np.random.default_rng(seed)
    notes = []
    for step in range(b.since, b.since + steps):
        split = b.plan(step)
        outs = []
        for share, v in zip(split.shares, true_speed, strict=True):
            t = (overhead + share * seq_len / v) * (1 + jitter * rng.uniform(-1, 1))
            outs.append(Out(t, share * seq_len))
        if note := b.observe(step, outs):
            notes.append(note)
    return notes


def balancer(*over: str, world: int = 2, probes=None, caps=None) -> Balancer:
    job = JobSpec().with_overrides(["run.batch_size=24", f"dist.workers={world}", *over])
    b = Balancer(job)
    addresses = [f"w{r}:1" for r in range(world)]
    b.begin(addresses, probes or [Probe(2**34, 10.0)] * world, caps or [None] * world)
    return b


def test_a_probe_that_lies_is_corrected_from_step_times_and_then_holds_still():
    b = balancer(probes=[Probe(2**34, 10.0), Probe(2**34, 10.0)])  # both claim the same
    assert b.split.shares == (12, 12)
    notes = simulate(b, [3000.0, 1000.0], 30, jitter=0.03)
    assert notes, "no re-split"
    assert "re-split after step 3" in notes[0]  # one settling step, then two measured
    assert "w1:1 runs" in notes[0] and "slower than its probe said" in notes[0]
    assert b.split.shares in ((18, 6), (17, 7))  # 3:1, the fixed 0.05 s costs the fast one more
    assert len(notes) <= 2, notes  # converges, then hysteresis holds it still under 3% noise
    before = b.split
    assert not simulate(b, [3000.0, 1000.0], 40, jitter=0.03, seed=1)
    assert b.split == before


def test_an_outlier_step_does_not_move_the_split():
    b = balancer()
    simulate(b, [3000.0, 1000.0], 12)
    assert b.split.shares == (18, 6)
    for step in range(12, 14):  # the fast worker stalls twice (a busy machine): 10x its time
        b.plan(step)
        assert b.observe(step, [Out(10 * (0.05 + 1800 / 3000), 1800), Out(0.65, 600)]) is None
    assert not simulate(b, [3000.0, 1000.0], 10)
    assert b.split.shares == (18, 6)


def test_a_large_fixed_cost_still_converges_to_equal_finish_times():
    # half a second per step whatever the share biases a small share's rate down, but the
    # balanced split (equal times) remains the fixed point
    b = balancer()
    notes = simulate(b, [3000.0, 1000.0], 30, overhead=0.5)
    assert b.split.shares == (18, 6), notes
    assert len(notes) <= 4, notes


def test_a_failed_probe_starts_equal_and_says_so():
    job = JobSpec().with_overrides(["run.batch_size=24"])
    b = Balancer(job)
    notes = b.begin(["a:1", "b:1"], [Probe(2**34, 30.0), "Probe: deadline exceeded"], [None, None])
    assert any("probe of worker b:1 failed (Probe: deadline exceeded)" in n for n in notes)
    assert b.split.shares == (12, 12)  # the others' speed, until step times come in
    notes = simulate(b, [1000.0, 2000.0], 10)
    assert b.split.shares == (8, 16) and notes


def test_small_gains_do_not_re_split():
    b = balancer("run.batch_size=64")
    speeds = [1000.0, 1000.0 * (1 - HYSTERESIS)]  # moving one sequence gains < HYSTERESIS
    assert shares_for(64, speeds) != [32, 32]
    assert not simulate(b, speeds, 20)
    assert b.split.shares == (32, 32)


def test_fixed_and_equal_policies_never_re_split():
    fixed = balancer('dist.balance="fixed"', "dist.speeds=[1, 3, 2]", world=3)
    assert fixed.split.shares == (4, 12, 8)
    assert not simulate(fixed, [1000.0, 1000.0, 1000.0], 10)
    equal = balancer('dist.balance="equal"', world=3, caps=[None, 0, 5])
    # no memory for one sequence: no share; the others' micro-batches stay within the equal
    # split's size (8) where their memory is unknown, and within their cap (5) where known
    assert equal.split == Split((12, 0, 12), (2, 1, 3))
    assert not simulate(equal, [1000.0, 1.0, 5000.0], 10)


def test_config_checks_the_speeds():
    JobSpec().with_overrides(["dist.workers=2", "dist.speeds=[3, 1]", 'dist.balance="fixed"'])
    for over, needle in [
        (["dist.workers=3", "dist.speeds=[3, 1]"], "dist.speeds: expected one per worker (3)"),
        (["dist.workers=2", "dist.speeds=[0, 1]"], "dist.speeds: expected relative speeds >= 1"),
        (['dist.balance="fixed"'], "dist.balance: 'fixed' needs dist.speeds"),
    ]:
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            JobSpec().with_overrides(over)


def test_a_new_group_keeps_each_workers_speed():
    b = balancer(world=3)
    simulate(b, [1000.0, 2000.0, 3000.0], 12)
    assert b.split.shares == (4, 8, 12)
    note = b.regroup(["w2:1", "w0:1", "new:1"], step=12)  # w1 lost, a newcomer joined
    assert "group re-formed" in note
    assert b.split.shares == (12, 4, 8)  # the newcomer starts at the others' median


def test_state_restores_on_a_group_of_the_same_size_only():
    b = balancer(world=2)
    simulate(b, [1000.0, 3000.0], 12)
    state = b.state()
    again = balancer(world=2, probes=[Probe(2**34, 1.0)] * 2)
    assert again.split.shares == (12, 12)
    assert "recorded at the step-12 checkpoint" in again.restore(state, 12)
    assert again.split == b.split and again.speeds() == b.speeds()
    assert balancer(world=3).restore(state, 12) is None
    assert balancer(world=2).restore({"shares": "junk"}, 12) is None


def test_a_resume_repeats_the_recorded_splits_then_balances_again():
    rows = [{"kind": "train", "step": 5}]
    rows += [{"kind": "worker", "step": s, "worker": r, "share": sh, "micro_batches": 1}
             for s, shares in [(5, (20, 4)), (6, (20, 4)), (7, (10, 14)), (8, (10, 14))]
             for r, sh in enumerate(shares)]  # fmt: skip
    rows.append({"kind": "worker", "step": 9, "worker": 0, "share": 24})  # a torn step: left out
    recorded = recorded_splits(rows, after=5, world=2)
    assert sorted(recorded) == [5, 6, 7]  # step indices (the row's step - 1)
    b = balancer(world=2)
    b.replay(recorded)
    seen = []
    for step in range(5, 20):
        split = b.plan(step)
        seen.append(split.shares)
        b.observe(step, [Out(0.05 + s * 100 / 1000.0, s * 100) for s in split.shares])
    assert seen[:3] == [(20, 4), (10, 14), (10, 14)]  # exactly as the run before the resume
    assert seen[-1] == (12, 12)  # then its own measurements again (equal workers)


def test_a_fast_worker_with_little_memory_accumulates_instead():
    b = balancer(caps=[3, None], probes=[Probe(2**30, 30.0), Probe(2**34, 10.0)])
    assert b.split == Split((18, 6), (6, 1))  # its share by speed, in micro-batches of 3
    b = balancer("run.grad_accum=2", caps=[0, 20])  # cannot hold one sequence: out, said so
    assert b.split == Split((0, 24), (1, 2))
    assert "w0:1 take no share" in b.describe("why")


def test_a_worker_too_slow_to_help_is_left_out_and_the_log_says_why():
    b = balancer(probes=[Probe(2**34, 100.0), Probe(2**34, 1.0)])
    assert b.split.shares == (24, 0)
    assert "w1:1 take no share: a sequence there would finish after the whole step" in b.describe(
        "x"
    )
