"""The one small interface every collective backend implements.

Buffers are 1-D: numpy float32, or *evaluated* mx arrays, which are read in place (an
evaluated mx array exposes its buffer, so ``np.asarray`` is a view, not a copy: measured
40 us for 200 MB against 0.67 s for a copy on this CPU; on Apple silicon's unified memory
the same buffer is the GPU's). Gradient ops also take a buffer already in the group's wire
dtype (an mx bfloat16/float16 array, cast on the device): it goes out as it is. Results are
new float32 numpy arrays (the wire's receive buffers); arguments are left untouched. All
ranks must call the same collectives in the same order: that order is what pairs up the
pieces (each call gets the next op id).

Shards follow :func:`engine.dist.shards.shard_bounds` everywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import mlx.core as mx
import numpy as np

from engine.dist.compression import check_codec, decode, encode, wire_dtype
from engine.dist.shards import shard_bounds


def as_f32(buf: Any) -> np.ndarray:
    """A contiguous 1-D float32 numpy view/copy of ``buf`` (numpy or mx array)."""
    arr = np.asarray(buf, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"collective buffer: expected a 1-D array, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def as_wire(buf: Any, codec: str) -> np.ndarray:
    """``buf`` as 1-D numpy in ``codec``'s wire form (float32; bf16 as uint16 bits; float16).

    An mx array already in the wire dtype is viewed in place; anything else is float32 and,
    for a narrow codec, encoded here."""
    check_codec(codec)
    if isinstance(buf, mx.array) and buf.dtype in (mx.bfloat16, mx.float16):
        if buf.ndim != 1:
            raise ValueError(f"collective buffer: expected a 1-D array, got shape {buf.shape}")
        want = mx.bfloat16 if codec == "bf16" else mx.float16
        if buf.dtype != want:
            raise ValueError(f"collective buffer: {buf.dtype} does not match compression {codec!r}")
        return np.frombuffer(memoryview(buf), np.uint16 if codec == "bf16" else np.float16)
    x = as_f32(buf)
    if codec == "none":
        return x
    data, _ = encode(x, codec)
    return np.frombuffer(data, np.uint16 if codec == "bf16" else np.float16)


def wire_to_f32(x: np.ndarray, codec: str) -> np.ndarray:
    """A new float32 array with the values a wire-form buffer stands for."""
    if codec == "none":
        return np.array(x, np.float32)
    return decode(memoryview(x).cast("B"), wire_dtype(codec)).copy()


class Group(ABC):
    """rank/size plus sum all-reduce, reduce-scatter, all-gather, broadcast, reduce, barrier.

    Gradient ops (``all_reduce``, ``reduce_scatter``, ``reduce``) use the group's wire
    compression; ``all_gather`` and ``broadcast`` carry parameters and are always exact.
    """

    rank: int
    size: int
    name: str = "group"

    @abstractmethod
    def all_reduce(self, buf: Any) -> np.ndarray:
        """Elementwise sum over ranks; every rank gets the same result."""

    @abstractmethod
    def reduce_scatter(self, buf: Any, bounds: list[tuple[int, int]] | None = None) -> np.ndarray:
        """The sum over ranks, but only this rank's shard of it. ``bounds`` (one ``(start,
        stop)`` per rank, in order, tiling the buffer; default ``shard_bounds``) says where
        each rank's shard lies (a bucket of a larger vector cuts the shards at its edges)."""

    @abstractmethod
    def all_gather(self, shard: Any, n: int) -> np.ndarray:
        """Concatenate every rank's shard of a length-``n`` vector (exact, no compression)."""

    @abstractmethod
    def broadcast(self, buf: Any, root: int = 0) -> np.ndarray:
        """``root``'s buffer on every rank (exact). Non-roots pass a buffer of the same size."""

    def reduce(self, buf: Any, root: int = 0) -> np.ndarray | None:
        """The sum at ``root`` (None elsewhere). Default: all-reduce; backends may do better."""
        out = self.all_reduce(buf)
        return out if self.rank == root else None

    def barrier(self) -> None:
        """Return only when every rank has entered the barrier."""
        self.all_reduce(np.zeros(1, np.float32))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sockets and threads (idempotent)."""

    def shard_of(self, n: int) -> tuple[int, int]:
        return shard_bounds(n, self.size)[self.rank]

    def segments(self, n: int, bounds: list[tuple[int, int]] | None) -> list[tuple[int, int]]:
        """``bounds`` checked (one per rank, tiling ``[0, n)`` in order), or the default shards."""
        if bounds is None:
            return shard_bounds(n, self.size)
        bounds = [(int(a), int(b)) for a, b in bounds]
        ok = len(bounds) == self.size and bounds[0][0] == 0 and bounds[-1][1] == n
        ok = ok and all(a <= b for a, b in bounds)
        ok = ok and all(b1 == a2 for (_, b1), (a2, _) in zip(bounds, bounds[1:], strict=False))
        if not ok:
            raise ValueError(
                f"reduce_scatter: bounds {bounds} do not tile [0, {n}) for {self.size} ranks"
            )
        return bounds


class SingleGroup(Group):
    """A group of one: every collective is the identity (the no-cluster fast path)."""

    name = "single"

    def __init__(self) -> None:
        self.rank, self.size = 0, 1

    def all_reduce(self, buf: Any) -> np.ndarray:
        return as_f32(buf).copy()

    def reduce_scatter(self, buf: Any, bounds: list[tuple[int, int]] | None = None) -> np.ndarray:
        return as_f32(buf).copy()

    def all_gather(self, shard: Any, n: int) -> np.ndarray:
        out = as_f32(shard).copy()
        if out.size != n:
            raise ValueError(f"all_gather: a group of one holds all {n} elements, got {out.size}")
        return out

    def broadcast(self, buf: Any, root: int = 0) -> np.ndarray:
        return as_f32(buf).copy()

    def barrier(self) -> None:
        return None
