"""Cut the flat gradient into buckets: the units that cross the wire while compute goes on.

Like ``mlx.nn.utils.average_gradients`` (and PyTorch DDP), many small tensors become a few
large transfers; bucket edges fall on tensor boundaries unless one tensor alone is bigger
than a bucket (then it is split). Buckets are also the unit of overlap: the step evaluates
them from the last one (the last layers, whose gradients the backward pass finishes first)
to the first, and sends each while the next is computed. So a gradient is cut into at least
``MIN_BUCKETS`` pieces of at least ``MIN_BUCKET_BYTES`` (a collective has a fixed latency
cost), and none larger than ``dist.bucket_mb``.
"""

from __future__ import annotations

from engine.dist.shards import shard_bounds
from engine.optim.flat_layout import FlatLayout

__all__ = ["FlatLayout", "bucket_ranges", "bucket_shards"]

MIN_BUCKETS = 8
MIN_BUCKET_BYTES = 1 << 20


def bucket_ranges(
    layout: FlatLayout,
    max_bytes: float,
    itemsize: int = 4,
    min_buckets: int = MIN_BUCKETS,
    min_bytes: float = MIN_BUCKET_BYTES,
) -> list[tuple[int, int]]:
    """Element ranges ``[(a, b), ...]`` covering the layout in order, cut at tensor boundaries."""
    total_bytes = layout.total * itemsize
    target = min(max(total_bytes / max(1, min_buckets), min_bytes), max_bytes)
    limit = max(1, int(target) // itemsize)
    out, start = [], 0
    for a, b in zip(layout.offsets[:-1], layout.offsets[1:], strict=True):
        if b - start > limit and a > start:
            out.append((start, a))
            start = a
        while b - start > limit:  # one tensor larger than a bucket
            out.append((start, start + limit))
            start += limit
    if start < layout.total or not out:
        out.append((start, layout.total))
    return out


def bucket_shards(bucket: tuple[int, int], n: int, size: int) -> list[tuple[int, int]]:
    """Where each rank's ZeRO-1 shard of a length-``n`` vector meets ``bucket``, relative to
    the bucket (empty ranges for ranks it misses): a reduce-scatter of the bucket with these
    bounds gives each rank its own shard's part of it."""
    a, b = bucket
    out = []
    for lo, hi in shard_bounds(n, size):
        s, e = max(lo, a), min(hi, b)
        out.append((s - a, e - a) if s < e else (min(max(lo, a), b) - a,) * 2)
    return out
