"""Packing: several short items share one sequence of at most ``max_seq_len`` tokens.

mlx-lm models take no per-item attention mask, so inside a pack attention crosses item
boundaries (a later item can attend to an earlier one). The first token of every packed
item is never a target: predicting a new item's BOS from the previous item means nothing.
"""

from __future__ import annotations

from bisect import bisect_left, insort

import numpy as np

from engine.data.tokenize import TokenizedSet


def pack(data: TokenizedSet, max_seq_len: int, seed: int) -> TokenizedSet:
    """Best-fit decreasing by length (ties in a seeded order): a deterministic, tight packing."""
    lengths = data.lengths()
    tiebreak = np.random.default_rng([seed, 0x9AC]).permutation(len(data))
    order = sorted(range(len(data)), key=lambda i: (-int(lengths[i]), int(tiebreak[i])))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted
    for i in order:
        need = int(lengths[i])
        k = bisect_left(free, (need, -1))
        if k < len(free):
            room, b = free.pop(k)
            bins[b].append(i)
            insort(free, (room - need, b))
        else:
            bins.append([i])
            insort(free, (max_seq_len - need, len(bins) - 1))
    out = TokenizedSet()
    for members in bins:
        weights = []
        for i in members:
            w = data.weights[i].copy()
            w[:1] = 0  # an item's first token is not predicted from the item before it
            weights.append(w)
        out.append(
            np.concatenate([data.tokens[i] for i in members]),
            np.concatenate(weights),
            data.sources[members[0]],
        )
    return out
