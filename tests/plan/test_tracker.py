"""The live Tracker and the scaling efficiency: a step is predicted from the padded tokens it
really computes and its gradient time (StepReply.work_tokens, grad_s), never from trained
tokens at max_seq_len, and the efficiency (engine/plan/efficiency.py) is at most 1.

The steps are synthetic: each worker's gradient time is its work tokens at a known rate,
the step adds a sync and an update, as engine/worker/training.py measures them."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from engine.plan import Costs, Mac, Tracker, WorkerStep, Workload, machine_macs, plan
from engine.plan.efficiency import measured_efficiency

GIB = 2**30
COSTS = Costs(micro_batch_s=0.0)


def mac(name: str, tflops: float) -> Mac:
    return Mac(name, tflops * 1e12, 64 * GIB, 10e9 / 8, 1e-4)


def work() -> Workload:  # the demo's shape: 215-token items, a third of them prompt
    return Workload(grad_params=100_000, batch=8, seq_len=224.0, flops_per_token=2e9,
                    fixed_bytes=GIB, bytes_per_sequence=GIB // 8, trained_per_sequence=168.0)  # fmt: skip


def run_steps(p, true_tflops: list[float], steps: int = 12, seed: int = 0):
    """Steps of varying width (bucketing): each worker's share at its true rate."""
    rng = np.random.default_rng(seed)
    sync, update = p.best.sync_s, p.best.update_s
    for _ in range(steps):
        width = int(rng.integers(40, 400))  # this batch's width: as wide as its longest item
        workers = []
        for share, tf in zip(p.best.shares, true_tflops, strict=True):
            padded = share * width
            grad = padded * p.work.flops_per_token / (tf * 1e12)
            workers.append(WorkerStep(int(share * width * 0.75), padded, grad, grad + update))
        step_s = max(w.grad_s for w in workers) + sync + update
        yield step_s, workers


def test_each_step_is_predicted_from_its_own_padded_work():
    p = plan([mac("studio", 12), mac("air", 4)], work(), COSTS)
    tracker = Tracker(p, COSTS)
    for step_s, workers in run_steps(p, [12, 4]):
        out = tracker.observe(step_s, workers)
        assert out["predicted_step_s"] == pytest.approx(step_s, rel=0.01)
        assert 0.9 < out["scaling_efficiency"] <= 1.0  # balanced, fast links: near ideal
    assert not tracker.measured_flops().keys() - {"studio", "air"}
    assert tracker.plan is p  # honest probes: nothing to correct


def test_a_probe_that_lies_is_corrected_from_measured_steps(caplog):
    p = plan([mac("liar", 10), mac("honest", 10)], work(), COSTS)
    tracker = Tracker(p, COSTS)
    with caplog.at_level(logging.WARNING):
        outs = [tracker.observe(s, w) for s, w in run_steps(p, [10 / 3, 10])]
    assert "liar computes at" in caplog.text
    assert tracker.plan.best.step_s > 1.3 * p.best.step_s  # the prediction follows the truth
    assert tracker.plan.best.shares[0] < tracker.plan.best.shares[1]  # and so would the split
    late = [o["predicted_step_s"] for o in outs[5:]]  # 2 warm-up steps, then 3 measured
    truth = [s for s, _ in list(run_steps(p, [10 / 3, 10]))[5:]]
    assert np.allclose(late, truth, rtol=0.02)  # corrected: each step predicted to 2%


def test_one_step_that_compiles_a_new_shape_corrects_nothing(caplog):
    p = plan([mac("studio", 12), mac("air", 4)], work(), COSTS)
    tracker = Tracker(p, COSTS)
    steps = list(run_steps(p, [12, 4], steps=10))
    s, w = steps[3]  # a re-split's first step: new shapes compile, 10x the gradient time
    steps[3] = (10 * s, [WorkerStep(x.tokens, x.work_tokens, 10 * x.grad_s, 10 * x.compute_s)
                         for x in w])  # fmt: skip
    with caplog.at_level(logging.WARNING):
        outs = [tracker.observe(s, w) for s, w in steps]
    assert tracker.plan is p and "computes at" not in caplog.text
    assert outs[-1]["predicted_step_s"] == pytest.approx(steps[-1][0], rel=0.01)
    assert all(0 < o["scaling_efficiency"] <= 1 for o in outs)


def test_scaling_efficiency_is_at_most_one_whatever_the_step():
    rng = np.random.default_rng(1)
    for _ in range(500):
        n = int(rng.integers(1, 5))
        workers = []
        for _ in range(n):
            work_tokens = int(rng.integers(0, 4000))
            grad = float(rng.uniform(0.01, 2.0))
            workers.append(WorkerStep(work_tokens // 2, work_tokens, grad,
                                      grad + float(rng.uniform(0, 0.2))))  # fmt: skip
        # the coordinator's wall time covers every worker's whole step, plus any sync
        step_s = max(w.compute_s for w in workers) + float(rng.uniform(0, 1))
        machines = [str(rng.integers(0, 2)) for _ in range(n)]
        known = {r: float(rng.uniform(10, 5000)) for r in range(n)}
        eff = measured_efficiency(step_s, workers, machines, known)
        assert 0 <= eff <= 1 + 1e-12


def test_processes_of_one_machine_are_one_machine_in_the_efficiency():
    # two processes each computed 1000 tokens in 1 s while sharing one machine: the machine
    # alone does the 2000 in 1 s too, so the step (1.2 s with sync) is 1/1.2 of ideal
    workers = [WorkerStep(500, 1000, 1.0, 1.0), WorkerStep(500, 1000, 1.0, 1.0)]
    one = measured_efficiency(1.2, workers, ["this machine", "this machine"])
    assert one == pytest.approx(1 / 1.2)
    two = measured_efficiency(1.2, workers, ["studio", "air"])  # two Macs: each alone 2 s
    assert two == pytest.approx(2 / 1.2 / 2)


def test_local_processes_are_tracked_against_the_machine_alone():
    machine = mac("this machine", 2)
    p = plan(machine_macs(machine, 2), work(), COSTS)
    assert p.machines == ["this machine"] and list(p.alone_tokens_per_s) == ["this machine"]
    assert p.best.speedup <= 1.0 and p.best.efficiency == pytest.approx(p.best.speedup)
    tracker = Tracker(p, COSTS)
    for step_s, workers in run_steps(p, [1, 1]):  # each process gets half the machine
        out = tracker.observe(step_s, workers)
        assert out["scaling_efficiency"] <= 1.0
        assert out["predicted_step_s"] == pytest.approx(step_s, rel=0.01)
