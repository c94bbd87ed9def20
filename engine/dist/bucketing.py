"""Flatten a tree of gradients into one float32 vector, reduce it in buckets, unflatten.

Like ``mlx.nn.utils.average_gradients``: many small tensors become a few large transfers of
about ``bucket_mb`` each. Bucket edges fall on tensor boundaries unless one tensor alone is
bigger than a bucket (then it is split). A few extra values (loss sum, token count) ride at
the end of the last bucket so they cost no extra round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from engine.dist.group import Group


class FlatLayout:
    """Names, shapes and offsets of every array of a parameter tree in a fixed order."""

    def __init__(self, template: Mapping[str, Any]):
        flat = tree_flatten(template) if _is_nested(template) else list(template.items())
        if not flat:
            raise ValueError("FlatLayout: the parameter tree has no arrays")
        self.nested = _is_nested(template)
        self.names = [k for k, _ in flat]
        self.shapes = [tuple(v.shape) for _, v in flat]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64).tolist()
        self.total = int(self.offsets[-1])

    def flatten(self, tree: Mapping[str, Any]) -> np.ndarray:
        """One contiguous float32 vector in layout order (names must match the template)."""
        flat = dict(tree_flatten(tree)) if _is_nested(tree) else dict(tree)
        missing = [n for n in self.names if n not in flat]
        if missing or len(flat) != len(self.names):
            extra = sorted(set(flat) - set(self.names))
            raise ValueError(
                f"gradients do not match the parameters: missing {missing[:5]}, unexpected {extra[:5]}"
            )
        parts = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            arr = flat[name]
            if tuple(arr.shape) != shape:
                raise ValueError(f"gradient {name}: expected shape {shape}, got {tuple(arr.shape)}")
            parts.append(
                arr.reshape(-1).astype(mx.float32)
                if isinstance(arr, mx.array)
                else mx.array(np.asarray(arr, np.float32).reshape(-1))
            )
        return np.array(mx.concatenate(parts)) if parts else np.zeros(0, np.float32)

    def unflatten(self, vec: np.ndarray) -> dict[str, Any]:
        """mx arrays in the template's shapes (nested like the template was)."""
        if vec.size != self.total:
            raise ValueError(f"unflatten: expected {self.total} values, got {vec.size}")
        whole = mx.array(vec)
        items = [
            (name, whole[a:b].reshape(shape))
            for name, shape, a, b in zip(
                self.names, self.shapes, self.offsets[:-1], self.offsets[1:], strict=True
            )
        ]
        return tree_unflatten(items) if self.nested else dict(items)

    def buckets(self, bucket_bytes: float) -> list[tuple[int, int]]:
        """Element ranges of about ``bucket_bytes`` each, cut at tensor boundaries."""
        limit = max(1, int(bucket_bytes) // 4)
        out, start = [], 0
        for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True):
            if b - start > limit and a > start:
                out.append((start, a))
                start = a
            while b - start > limit:  # one tensor larger than a bucket
                out.append((start, start + limit))
                start += limit
        if start < self.total or not out:
            out.append((start, self.total))
        return out


def reduce_buckets(
    group: Group, flat: np.ndarray, buckets: list[tuple[int, int]], tail: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """All-reduce ``flat`` bucket by bucket; ``tail`` rides with the last bucket.

    Returns ``(summed flat, summed tail)``.
    """
    out = np.empty_like(flat)
    summed_tail = None
    for i, (a, b) in enumerate(buckets):
        if i == len(buckets) - 1 and tail is not None:
            red = group.all_reduce(np.concatenate([flat[a:b], tail.astype(np.float32)]))
            out[a:b], summed_tail = red[: b - a], red[b - a :]
        else:
            out[a:b] = group.all_reduce(flat[a:b])
    return out, summed_tail


def _is_nested(tree: Mapping[str, Any]) -> bool:
    return any(isinstance(v, (dict, list, tuple)) for v in tree.values())
