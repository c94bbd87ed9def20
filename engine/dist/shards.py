"""Shard boundaries: one pure function that every collective and ZeRO-1 agree on.

Like ``np.array_split``: the first ``n % size`` shards get one extra element, so shard
sizes differ by at most one and a shard may be empty when ``n < size``.
"""

from __future__ import annotations


def shard_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` for each of ``size`` shards of a length-``n`` vector."""
    if size < 1:
        raise ValueError(f"shard_bounds: size should be >= 1, got {size}")
    if n < 0:
        raise ValueError(f"shard_bounds: n should be >= 0, got {n}")
    base, extra = divmod(n, size)
    bounds, start = [], 0
    for i in range(size):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def shard_range(n: int, size: int, rank: int) -> tuple[int, int]:
    """``(start, stop)`` of ``rank``'s shard."""
    if not 0 <= rank < size:
        raise ValueError(f"shard_range: rank {rank} is outside a group of {size}")
    return shard_bounds(n, size)[rank]


def chunk_bounds(start: int, stop: int, chunk: int) -> list[tuple[int, int]]:
    """Split ``[start, stop)`` into pieces of at most ``chunk`` elements (at least one piece)."""
    if chunk < 1:
        raise ValueError(f"chunk_bounds: chunk should be >= 1, got {chunk}")
    if stop <= start:
        return [(start, start)]
    return [(s, min(s + chunk, stop)) for s in range(start, stop, chunk)]
