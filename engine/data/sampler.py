"""Which items go into each step's batch: a pure function of (seed, step), so resume is exact.

The items form an endless stream of epochs, each a seeded permutation; global batch ``s`` is
stream positions ``[s*B, (s+1)*B)`` (so every batch is full and the epoch is ``s*B // n``).
Within a window of ``bucket_window`` batches the items are sorted by length and cut into
batches, whose order is then shuffled (seeded): batches hold similar lengths, little padding.
A window that spans an epoch boundary may hold one item twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np


def split_batch(
    batch: list[int], rank: int, world: int, accum: int, shares: Sequence[int] | None = None
) -> list[list[int]]:
    """This rank's micro-batches of a global batch: a contiguous part, then split again into
    ``accum`` micro-batches (np.array_split). ``shares`` (sequences by rank, summing to the
    batch) sizes the parts; None splits evenly (np.array_split). Empty micro-batches are
    left out."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    if accum < 1:
        raise ValueError(f"accum must be >= 1, got {accum}")
    items = np.asarray(batch, dtype=np.int64)
    if shares is None:
        part = np.array_split(items, world)[rank]
    else:
        check_shares(shares, world, len(items))
        lo = int(sum(shares[:rank]))
        part = items[lo : lo + int(shares[rank])]
    return [m.tolist() for m in np.array_split(part, accum) if len(m)]


def check_shares(shares: Sequence[int], world: int, batch_size: int) -> None:
    """Raise ValueError unless ``shares`` gives each of ``world`` ranks a part of the batch."""
    if len(shares) != world:
        raise ValueError(f"shares: expected {world} (one per rank), got {len(shares)}")
    if any(int(s) != s or s < 0 for s in shares):
        raise ValueError(f"shares: expected whole numbers >= 0, got {list(shares)}")
    if sum(shares) != batch_size:
        raise ValueError(
            f"shares: {list(shares)} sum to {sum(shares)}, the global batch has {batch_size}"
        )


class BatchSampler:
    def __init__(
        self, lengths: list[int] | np.ndarray, batch_size: int, seed: int, bucket_window: int = 16
    ):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if len(self.lengths) == 0:
            raise ValueError("no items to sample from")
        if batch_size < 1 or bucket_window < 1:
            raise ValueError("batch_size and bucket_window must be >= 1")
        self.n = len(self.lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.window = bucket_window
        self._perm = lru_cache(maxsize=4)(self._permutation)
        self._batches = lru_cache(maxsize=4)(self._window_batches)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def epoch_of(self, step: int) -> int:
        return step * self.batch_size // self.n

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def _stream(self, start: int, count: int) -> np.ndarray:
        out = np.empty(count, dtype=np.int64)
        pos = 0
        while pos < count:
            epoch, offset = divmod(start + pos, self.n)
            take = min(self.n - offset, count - pos)
            out[pos : pos + take] = self._perm(epoch)[offset : offset + take]
            pos += take
        return out

    def _window_batches(self, w: int) -> tuple[np.ndarray, ...]:
        b = self.batch_size
        items = self._stream(w * self.window * b, self.window * b)
        items = items[np.argsort(self.lengths[items], kind="stable")]
        batches = [items[k * b : (k + 1) * b] for k in range(self.window)]
        order = np.random.default_rng([self.seed, 1 << 20, w]).permutation(self.window)
        return tuple(batches[k] for k in order)

    def global_batch(self, step: int) -> list[int]:
        """The ``batch_size`` item indices of ``step``, shortest first."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        w, k = divmod(step, self.window)
        return self._batches(w)[k].tolist()

    def micro_batches(
        self, step: int, rank: int = 0, world: int = 1, accum: int = 1,
        shares: Sequence[int] | None = None,
    ) -> list[list[int]]:  # fmt: skip
        return split_batch(self.global_batch(step), rank, world, accum, shares)


def eval_batches(lengths: list[int] | np.ndarray, batch_size: int) -> list[list[int]]:
    """Every item once, in length order (least padding), for validation."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
