"""Measured against predicted, live: the coordinator feeds each step's figures to a Tracker,
which returns the predicted step time and the scaling efficiency for that step's MetricEvent,
and corrects a Mac's compute rate from its measured steps (a probe that lied)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from engine.plan.costs import Costs
from engine.plan.inputs import Mac
from engine.plan.planner import Plan, alone_tokens_per_s, plan

log = logging.getLogger(__name__)

EMA = 0.3  # weight of the newest step in a Mac's measured rate
WARMUP_STEPS = 2  # the first steps compile: they say nothing about a Mac's speed
LIED = 0.30  # a measured rate this far from the planned one replaces it (and is logged)


@dataclass
class Tracker:
    plan: Plan
    costs: Costs = field(default_factory=Costs)
    steps: int = 0
    measured_flops: dict[str, float] = field(default_factory=dict)

    def observe(self, step_s: float, workers: list[tuple[int, float]]) -> dict[str, float]:
        """One step: its wall time and, per Mac in plan order, (tokens, compute seconds).
        Returns the values for the step's MetricEvent."""
        self.steps += 1
        tokens = sum(t for t, _ in workers)
        out = {"predicted_step_s": self.plan.best.step_s}
        fpt = self.plan.work.flops_per_token
        if self.steps > WARMUP_STEPS:
            # a worker's compute_s is its step less communication: the update is in it
            update = self.plan.best.update_s
            for mac, (tok, compute_s) in zip(self.plan.macs, workers, strict=False):
                if tok and compute_s > update:
                    rate = tok * fpt / (compute_s - update)
                    old = self.measured_flops.get(mac.name, rate)
                    self.measured_flops[mac.name] = (1 - EMA) * old + EMA * rate
            self._maybe_correct()
        alone = sum(self._alone().values())
        if step_s > 0 and alone > 0:
            out["scaling_efficiency"] = tokens / step_s / alone
        return out

    def _alone(self) -> dict[str, float]:
        return {
            m.name: alone_tokens_per_s(self._corrected(m), self.plan.work, self.costs)
            for m in self.plan.macs
        }

    def _corrected(self, mac: Mac) -> Mac:
        rate = self.measured_flops.get(mac.name)
        return mac if rate is None else mac.with_flops(rate, "measured steps")

    def _maybe_correct(self) -> None:
        liars = [
            m for m in self.plan.macs
            if m.name in self.measured_flops and abs(self.measured_flops[m.name] / m.flops - 1) > LIED
        ]  # fmt: skip
        if not liars:
            return
        for m in liars:
            log.warning("%s computes at %.2f TFLOP/s measured against %.2f planned (%s): "
                        "the plan now uses the measured rate", m.name,
                        self.measured_flops[m.name] / 1e12, m.flops / 1e12, m.source)  # fmt: skip
        macs = [self._corrected(m) for m in self.plan.macs]
        b = self.plan.best.choice
        self.plan = plan(macs, self.plan.work, self.costs, modes=(b.mode,),
                         compressions=(b.compression,), contributions=False)  # fmt: skip
