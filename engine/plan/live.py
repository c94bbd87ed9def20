"""Measured against predicted, live: the coordinator feeds each step's figures to a Tracker,
which returns that step's predicted time and its scaling efficiency for the step's
MetricEvent, and corrects a Mac's compute rate from its measured steps (a probe that lied).

Units are those the run measures (engine/plan/efficiency.py): a Mac's speed is its padded
work tokens per second of gradient time (``grad_s``: before any communication), never its
trained tokens (fewer) nor the plan's average width (a step's batch is as wide as its
longest item). The prediction for a step is the plan's model applied to that step's own
work on each Mac (its ``work_tokens`` and micro-batches): slowest gradient time + the
plan's sync + update, so a narrow batch is predicted short and a wide one long.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from dataclasses import dataclass, field

from engine.plan.costs import Costs
from engine.plan.efficiency import WorkerStep, measured_efficiency
from engine.plan.inputs import Mac
from engine.plan.planner import Plan, plan

log = logging.getLogger(__name__)

WINDOW = 8  # a Mac's measured speed is the median of its last WINDOW measured steps
WARMUP_STEPS = 2  # the first steps compile: they say nothing about a Mac's speed
MIN_SAMPLES = 3  # a median of 3 outlives one step that compiled a new shape (a re-split)
LIED = 0.30  # a measured rate this far from the planned one replaces it (and is logged)


@dataclass
class Tracker:
    plan: Plan
    costs: Costs = field(default_factory=Costs)
    steps: int = 0
    samples: dict[str, deque[float]] = field(default_factory=dict)  # Mac -> FLOP/s per step

    def observe(self, step_s: float, workers: list[WorkerStep]) -> dict[str, float]:
        """One step: its wall time and each Mac's WorkerStep, in plan order. Returns the
        values for the step's MetricEvent (predicted_step_s, scaling_efficiency)."""
        self.steps += 1
        macs = self.plan.macs
        if len(workers) != len(macs):
            return {}
        out = {"predicted_step_s": self.predict_step(workers)}
        if self.steps > WARMUP_STEPS:
            fpt = self.plan.work.flops_per_token
            for mac, w in zip(macs, workers, strict=True):
                busy = w.grad_s - w.micro_batches * self.costs.micro_batch_s
                if w.work_tokens > 0 and busy > 0:
                    self.samples.setdefault(mac.name, deque(maxlen=WINDOW)).append(
                        w.work_tokens * fpt / busy
                    )
            self._maybe_correct()
        known = {r: rate for r, m in enumerate(macs) if (rate := self.work_rate(m.name))}
        eff = measured_efficiency(step_s, workers, [m.machine for m in macs], known)
        if eff > 0:
            out["scaling_efficiency"] = eff
        return out

    def predict_step(self, workers: list[WorkerStep]) -> float:
        """The plan's step time for this step's work: each Mac's gradient time for its own
        work tokens and micro-batches at its planned (or corrected) rate, the slowest of
        them, then the plan's synchronisation and update."""
        fpt, best = self.plan.work.flops_per_token, self.plan.best
        grad = max(
            (w.work_tokens * fpt / m.flops + w.micro_batches * self.costs.micro_batch_s
             for m, w in zip(self.plan.macs, workers, strict=True) if w.work_tokens > 0),
            default=0.0,
        )  # fmt: skip
        return grad + best.sync_s + best.update_s

    def measured_flops(self) -> dict[str, float]:
        """Each measured Mac's training FLOP/s: the median of its recent steps (once it has
        MIN_SAMPLES of them)."""
        return {
            name: statistics.median(s) for name, s in self.samples.items() if len(s) >= MIN_SAMPLES
        }

    def work_rate(self, name: str) -> float:
        """A Mac's recent speed in work tokens per gradient second (0: not measured yet)."""
        flops = self.measured_flops().get(name)
        return flops / self.plan.work.flops_per_token if flops else 0.0

    def _corrected(self, mac: Mac) -> Mac:
        rate = self.measured_flops().get(mac.name)
        return mac if rate is None else mac.with_flops(rate, "measured steps")

    def _maybe_correct(self) -> None:
        measured = self.measured_flops()
        liars = [
            m for m in self.plan.macs
            if m.name in measured and abs(measured[m.name] / m.flops - 1) > LIED
        ]  # fmt: skip
        if not liars:
            return
        for m in liars:
            log.warning("%s computes at %.3g TFLOP/s measured against %.3g planned (%s): "
                        "the plan now uses the measured rate", m.name,
                        measured[m.name] / 1e12, m.flops / 1e12, m.source)  # fmt: skip
        macs = [self._corrected(m) for m in self.plan.macs]
        b = self.plan.best.choice
        self.plan = plan(macs, self.plan.work, self.costs, modes=(b.mode,),
                         compressions=(b.compression,), contributions=False)  # fmt: skip
