"""The one small interface every collective backend implements.

Buffers are 1-D numpy float32 arrays (mx arrays are accepted and converted: numpy is what
the wire speaks and what sums in place without a graph). Every method returns a new array
and leaves its argument untouched. All ranks must call the same collectives in the same
order: that order is what pairs up the pieces (each call gets the next op id).

Shards follow :func:`engine.dist.shards.shard_bounds` everywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from engine.dist.shards import shard_bounds


def as_f32(buf: Any) -> np.ndarray:
    """A contiguous 1-D float32 numpy view/copy of ``buf`` (numpy or mx array)."""
    arr = np.asarray(buf, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"collective buffer: expected a 1-D array, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


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
    def reduce_scatter(self, buf: Any) -> np.ndarray:
        """The sum over ranks, but only this rank's shard of it."""

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


class SingleGroup(Group):
    """A group of one: every collective is the identity (the no-cluster fast path)."""

    name = "single"

    def __init__(self) -> None:
        self.rank, self.size = 0, 1

    def all_reduce(self, buf: Any) -> np.ndarray:
        return as_f32(buf).copy()

    def reduce_scatter(self, buf: Any) -> np.ndarray:
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
