"""Learning-rate schedules as pure functions of the step (nanoGPT style).

A pure function means any worker, a resumed run and a sharded optimizer agree on the
rate for step ``s`` with no state to save. ``step`` is the 0-based index of the update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from engine.config import OptimSpec

SCHEDULES = ("constant", "linear", "cosine")


def learning_rate_at(
    step: int,
    total_steps: int,
    peak: float,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.1,
) -> float:
    """The learning rate for update ``step`` of ``total_steps``.

    Linear warmup from ``peak / (warmup_steps + 1)`` to ``peak``, then constant, or a linear
    or cosine decay that reaches ``peak * min_lr_ratio`` at the last step.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps: expected >= 1, got {total_steps}")
    if step < 0:
        raise ValueError(f"step: expected >= 0, got {step}")
    if step < warmup_steps:
        return peak * (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return peak
    floor = peak * min_lr_ratio
    span = max(total_steps - 1 - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    if schedule == "linear":
        return peak - (peak - floor) * progress
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def make_schedule(spec: OptimSpec, total_steps: int) -> Callable[[int], float]:
    """``step -> learning rate`` for a job's optimizer settings."""
    return partial(
        learning_rate_at,
        total_steps=total_steps,
        peak=spec.learning_rate,
        schedule=spec.schedule,
        warmup_steps=spec.warmup_steps,
        min_lr_ratio=spec.min_lr_ratio,
    )
