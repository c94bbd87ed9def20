"""Global-norm gradient clipping, split so a sharded optimizer can pass the true norm.

A ZeRO-1 worker only holds a slice of the gradient: it sums its squares, all-reduces
that sum, and calls :func:`clip_with_norm` with the square root.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx.utils import tree_map, tree_reduce


def squared_norm(grads: Any) -> mx.array:
    """Sum of squares of every array in the tree, accumulated in float32."""
    return tree_reduce(
        lambda acc, g: acc + mx.square(g.astype(mx.float32)).sum(), grads, mx.array(0.0)
    )


def global_norm(grads: Any) -> mx.array:
    """The L2 norm of all gradients taken together (an mx scalar, not synced)."""
    return mx.sqrt(squared_norm(grads))


def clip_with_norm(grads: Any, norm: mx.array | float, max_norm: float) -> Any:
    """Scale ``grads`` by ``min(1, max_norm / norm)``; ``max_norm == 0`` turns clipping off."""
    if max_norm < 0:
        raise ValueError(f"max_norm: expected >= 0, got {max_norm}")
    if max_norm == 0:
        return grads
    factor = mx.minimum(max_norm / (mx.array(norm, mx.float32) + 1e-6), 1.0)
    return tree_map(lambda g: (g * factor).astype(g.dtype), grads)


def clip_by_global_norm(grads: Any, max_norm: float) -> tuple[Any, mx.array]:
    """Clip to ``max_norm`` by the global norm; returns ``(clipped, norm before clipping)``."""
    norm = global_norm(grads)
    return clip_with_norm(grads, norm, max_norm), norm
