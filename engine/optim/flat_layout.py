"""One fixed order for a tree of arrays, so it can live as one flat vector on the device.

The optimizers keep their fp32 master weights, moments and gradients flat in this order (a
ZeRO-1 shard is then just a range of it, and a checkpoint is the same vector whatever the
sync mode). :meth:`FlatLayout.flatten` concatenates on the device (lazy: nothing waits) and
:meth:`FlatLayout.unflatten` hands back reshaped *slices* of the vector, which MLX keeps as
views of the same buffer: a model whose trainable weights are these views holds no copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten


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

    def leaves(self, tree: Mapping[str, Any]) -> list[Any]:
        """The arrays of ``tree`` in layout order; names and shapes must match the template."""
        flat = dict(tree_flatten(tree)) if _is_nested(tree) else dict(tree)
        missing = [n for n in self.names if n not in flat]
        if missing or len(flat) != len(self.names):
            extra = sorted(set(flat) - set(self.names))
            raise ValueError(
                f"gradients do not match the parameters: missing {missing[:5]}, unexpected {extra[:5]}"
            )
        out = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            arr = flat[name]
            if tuple(arr.shape) != shape:
                raise ValueError(f"gradient {name}: expected shape {shape}, got {tuple(arr.shape)}")
            out.append(arr if isinstance(arr, mx.array) else mx.array(np.asarray(arr, np.float32)))
        return out

    def flatten(self, tree: Mapping[str, Any], dtype: mx.Dtype = mx.float32) -> mx.array:
        """One contiguous vector in layout order, built on the device (lazy)."""
        return self.flatten_range(self.leaves(tree), 0, self.total, dtype)

    def flatten_range(
        self, leaves: list[Any], start: int, stop: int, dtype: mx.Dtype = mx.float32
    ) -> mx.array:
        """Elements ``[start, stop)`` of the flat vector from ``leaves`` (as :meth:`leaves`
        returns them); tensors at the edges are cut."""
        parts = []
        for arr, a, b in zip(leaves, self.offsets[:-1], self.offsets[1:], strict=True):
            if b <= start or a >= stop:
                continue
            piece = arr.reshape(-1)
            if a < start or b > stop:
                piece = piece[max(start, a) - a : min(stop, b) - a]
            parts.append(piece.astype(dtype))
        if not parts:
            return mx.zeros((0,), dtype)
        return parts[0] if len(parts) == 1 else mx.concatenate(parts)

    def split(self, vec: Any) -> list[mx.array]:
        """The arrays of the vector in layout order and shapes (views of an mx vector)."""
        whole = vec if isinstance(vec, mx.array) else mx.array(np.asarray(vec, np.float32))
        if whole.size != self.total:
            raise ValueError(f"unflatten: expected {self.total} values, got {whole.size}")
        return [
            whole[a:b].reshape(shape)
            for shape, a, b in zip(self.shapes, self.offsets[:-1], self.offsets[1:], strict=True)
        ]

    def unflatten(self, vec: Any) -> dict[str, Any]:
        """mx arrays in the template's shapes (nested like the template was); for an mx
        vector these are views of it."""
        items = list(zip(self.names, self.split(vec), strict=True))
        return tree_unflatten(items) if self.nested else dict(items)

    def decay_mask(self, no_decay: Any) -> np.ndarray | None:
        """0/1 per element (0 where ``no_decay(name)``), or None when every element decays."""
        if not any(no_decay(n) for n in self.names):
            return None
        mask = np.ones(self.total, np.float32)
        for name, a, b in zip(self.names, self.offsets[:-1], self.offsets[1:], strict=True):
            if no_decay(name):
                mask[a:b] = 0.0
        return mask


def _is_nested(tree: Mapping[str, Any]) -> bool:
    return any(isinstance(v, (dict, list, tuple)) for v in tree.values())
