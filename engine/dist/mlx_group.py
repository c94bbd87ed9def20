"""A Group on MLX's own distributed layer (``mx.distributed``, ring backend over TCP).

MLX sums inside its C++ ring. The optimizer uses the device methods (``all_sum_device``,
``all_gather_device``): mx arrays in, lazy mx arrays out, no numpy at all; the Group methods
convert numpy <-> mx at the edges for everything else. MLX has one global group per
process, so make one MlxGroup per process. ``sum_scatter`` is NCCL-only in MLX, so
reduce-scatter is an all-sum and a slice; all-gather pads every shard to the largest one.
Compression casts to bf16/fp16 before the all-sum (MLX then also sums in that dtype).
"""

from __future__ import annotations

import logging
from typing import Any

import mlx.core as mx
import numpy as np

from engine.dist.compression import check_codec
from engine.dist.group import Group, as_f32
from engine.dist.shards import shard_bounds

log = logging.getLogger(__name__)
_MX_DTYPE = {"none": mx.float32, "bf16": mx.bfloat16, "fp16": mx.float16}


class MlxGroup(Group):
    name = "mlx"

    def __init__(self, backend: str = "ring", compression: str = "none"):
        self.codec = check_codec(compression)
        self._group = mx.distributed.init(strict=True, backend=backend)
        self.rank, self.size = self._group.rank(), self._group.size()
        self._cpu = mx.Device(mx.cpu)  # the ring backend runs its collectives on the CPU stream
        log.info("mx.distributed %s backend: rank %d of %d", backend, self.rank, self.size)

    def _sum(self, x: np.ndarray, dtype: Any) -> np.ndarray:
        out = mx.distributed.all_sum(mx.array(x).astype(dtype), group=self._group, stream=self._cpu)
        return np.array(out.astype(mx.float32))

    def all_reduce(self, buf: Any) -> np.ndarray:
        if isinstance(buf, mx.array) and buf.dtype != mx.float32:  # already in wire dtype
            return np.array(self.all_sum_device(buf).astype(mx.float32))
        x = as_f32(buf)
        if self.size == 1 or x.size == 0:
            return x.copy()
        return self._sum(x, _MX_DTYPE[self.codec])

    def reduce_scatter(self, buf: Any, bounds: list[tuple[int, int]] | None = None) -> np.ndarray:
        full = self.all_reduce(buf)
        a, b = self.segments(full.size, bounds)[self.rank]
        return full[a:b].copy()

    # ---- the device path: mx in, lazy mx out ------------------------------------------------
    def all_sum_device(self, x: mx.array) -> mx.array:
        """The sum over ranks of ``x`` in its own dtype (lazy)."""
        if self.size == 1 or x.size == 0:
            return x
        return mx.distributed.all_sum(x, group=self._group, stream=self._cpu)

    def wire_cast(self, x: mx.array) -> mx.array:
        """``x`` in this group's wire dtype (lazy)."""
        return x.astype(_MX_DTYPE[self.codec])

    def all_gather_device(self, shard: mx.array, n: int) -> mx.array:
        """Every rank's shard of a length-``n`` vector, joined (exact; lazy)."""
        bounds = shard_bounds(n, self.size)
        if self.size == 1:
            return shard
        width = max(hi - lo for lo, hi in bounds)
        padded = mx.pad(shard, (0, width - shard.size)) if shard.size < width else shard
        rows = mx.distributed.all_gather(padded, group=self._group, stream=self._cpu)
        rows = rows.reshape(self.size, width)
        return mx.concatenate([rows[r, : hi - lo] for r, (lo, hi) in enumerate(bounds)])

    def all_gather(self, shard: Any, n: int) -> np.ndarray:
        s = as_f32(shard)
        bounds = shard_bounds(n, self.size)
        a, b = bounds[self.rank]
        if s.size != b - a:
            raise ValueError(
                f"all_gather: rank {self.rank} should hold {b - a} elements, got {s.size}"
            )
        if self.size == 1:
            return s.copy()
        width = max(hi - lo for lo, hi in bounds)
        if width == 0:
            return np.zeros(0, np.float32)
        padded = np.zeros(width, np.float32)
        padded[: s.size] = s
        got = mx.distributed.all_gather(mx.array(padded), group=self._group, stream=self._cpu)
        rows = np.array(got).reshape(self.size, width)
        return np.concatenate([rows[r, : hi - lo] for r, (lo, hi) in enumerate(bounds)])

    def broadcast(self, buf: Any, root: int = 0) -> np.ndarray:
        x = as_f32(buf)
        if self.size == 1:
            return x.copy()
        # Exact: only the root contributes non-zeros, and x + 0 == x in float32.
        return self._sum(x if self.rank == root else np.zeros_like(x), mx.float32)

    def barrier(self) -> None:
        if self.size > 1:
            self._sum(np.zeros(1, np.float32), mx.float32)
