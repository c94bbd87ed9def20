"""What Orchard's throughput figures count, defined once for the plan, the live Tracker, the
metrics, the Monitor and the benchmarks.

**tokens/s** counts *trained* tokens: the target tokens the loss counts (no padding, no
masked prompt tokens), per second of wall time. That is what mlx-lm reports as Tokens/sec
(mlx_lm/tuner/trainer.py: ``ntoks = mask.sum()`` over the positions between the prompt's
end and the item's length, all-summed over workers, over the reporting window's time), and
what a user compares with it. A StepReply's ``tokens`` are these.

**work tokens** (``work_tokens``, "computed tokens") count every position a step computes,
padding and masked prompts included (a StepReply's ``work_tokens``: the padded micro-batch
sizes). Compute time follows them, so speeds (the balancer's, the Tracker's) are work tokens
per second of gradient time (``grad_s``); the metrics show ``work_tokens_per_s`` beside
``tokens_per_s``.

**scaling efficiency** is tokens/s over the sum of each *machine*'s tokens/s alone: the
ideal of perfect balance and free synchronisation, so it is at most 1. A machine alone is
one process using all of it: local worker processes of one machine are one machine, and
their ideal is that machine alone, never one per process. The plan computes each machine
alone from its model (engine/plan/planner.py); a run measures it from the same step: the
step's work at that machine's measured speed, plus the update, which a machine alone pays
too (``measured_efficiency``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def scaling_efficiency(tokens_per_s: float, alone_tokens_per_s: Iterable[float]) -> float:
    """tokens/s over the sum of each machine's tokens/s alone (0 when none is known)."""
    ideal = sum(alone_tokens_per_s)
    return tokens_per_s / ideal if ideal > 0 else 0.0


@dataclass(frozen=True)
class WorkerStep:
    """One worker's part of a measured step (a StepReply's figures)."""

    tokens: int  # trained target tokens
    work_tokens: int  # tokens computed, padding included
    grad_s: float  # seconds computing gradients, before any communication
    compute_s: float  # the step less communication: gradients plus the update
    micro_batches: int = 1

    @property
    def rate(self) -> float:
        """Work tokens per second of gradient time (0: no share this step)."""
        return self.work_tokens / self.grad_s if self.work_tokens > 0 and self.grad_s > 0 else 0.0


def measured_efficiency(step_s: float, workers: Sequence[WorkerStep], machines: Sequence[str],
                        known_rates: dict[int, float] | None = None) -> float:  # fmt: skip
    """One step's scaling efficiency: its tokens/s over the sum of each machine's tokens/s
    alone, each machine alone computing the step's whole work at the speed its workers
    showed in this step (their rates summed: processes of one machine share it) and then
    updating, as every worker does. ``machines`` names each worker's machine; a worker
    with no share this step is counted at ``known_rates[rank]`` (its recent speed), if given.

    At most 1: the step took at least its slowest worker's gradient time plus an update, and
    the work over the summed speed (perfect balance) is no more than that slowest time."""
    tokens = sum(w.tokens for w in workers)
    work = sum(w.work_tokens for w in workers)
    if step_s <= 0 or work <= 0 or tokens <= 0:
        return 0.0
    known = known_rates or {}
    speed: dict[str, float] = {}
    for rank, (w, machine) in enumerate(zip(workers, machines, strict=True)):
        rate = w.rate or known.get(rank, 0.0)
        speed[machine] = speed.get(machine, 0.0) + rate
    shared = [w for w in workers if w.work_tokens > 0]
    update = min((max(0.0, w.compute_s - w.grad_s) for w in shared), default=0.0)
    alone = [tokens / (work / v + update) for v in speed.values() if v > 0]
    return scaling_efficiency(tokens / step_s, alone)
