"""Dynamic loss scaling for fp16 training.

fp16 gradients underflow for small values, so the loss is multiplied by a large scale
before backprop and the gradients divided by it after. When a step overflows (inf/nan)
the step is skipped and the scale backs off; after ``growth_interval`` clean steps it grows.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import mlx.core as mx
from mlx.utils import tree_reduce

log = logging.getLogger(__name__)


def all_finite(grads: Any) -> mx.array:
    """An mx bool scalar: no inf or nan anywhere in the tree."""
    return tree_reduce(
        lambda acc, g: mx.logical_and(acc, mx.isfinite(g).all()), grads, mx.array(True)
    )


@dataclass
class LossScaleState:
    scale: float
    good_steps: int = 0
    skipped_steps: int = 0


class DynamicLossScale:
    """Holds the current scale; :meth:`update` says whether a step may be applied."""

    def __init__(
        self,
        # 2^10, not the usual 2^15: a token-sum loss makes gradients ~tokens-times larger
        # than a mean loss, so a smaller start overflows less.
        init_scale: float = 2.0**10,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        min_scale: float = 1.0,
        max_scale: float = 2.0**24,
    ):
        if not init_scale > 0:
            raise ValueError(f"init_scale: expected > 0, got {init_scale}")
        if not growth_factor > 1:
            raise ValueError(f"growth_factor: expected > 1, got {growth_factor}")
        if not 0 < backoff_factor < 1:
            raise ValueError(f"backoff_factor: expected in (0, 1), got {backoff_factor}")
        if growth_interval < 1:
            raise ValueError(f"growth_interval: expected >= 1, got {growth_interval}")
        if not 0 < min_scale <= max_scale:
            raise ValueError(
                f"min_scale/max_scale: expected 0 < min <= max, got {min_scale}, {max_scale}"
            )
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.state = LossScaleState(scale=float(init_scale))

    @property
    def scale(self) -> float:
        return self.state.scale

    def update(self, finite: bool) -> bool:
        """Record one step's outcome; True means apply it, False means skip it."""
        s = self.state
        if not finite:
            s.scale = max(s.scale * self.backoff_factor, self.min_scale)
            s.good_steps = 0
            s.skipped_steps += 1
            log.warning("fp16 overflow: step skipped, loss scale now %g", s.scale)
            return False
        s.good_steps += 1
        if s.good_steps >= self.growth_interval:
            s.scale = min(s.scale * self.growth_factor, self.max_scale)
            s.good_steps = 0
        return True

    def state_dict(self) -> dict[str, Any]:
        return asdict(self.state)

    def load_state_dict(self, data: dict[str, Any]) -> None:
        self.state = LossScaleState(
            scale=float(data["scale"]),
            good_steps=int(data.get("good_steps", 0)),
            skipped_steps=int(data.get("skipped_steps", 0)),
        )
