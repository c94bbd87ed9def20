"""Packing: several short items share one sequence of at most ``max_seq_len`` tokens.

Each packed item's first token carries the weight ``SEGMENT_START`` (2: a flag bit, never a
target: predicting a record's first token from the record before it means nothing). From
those flags :func:`engine.data.collate.collate` numbers the records of every row, and the
step gives each record its own causal attention (a block-diagonal mask, engine/train/step.py),
so a record never sees the one packed before it: with rotary positions (every mlx-lm Llama,
Qwen, Mistral, Gemma...) a packed record gets the logits it would get alone. Whether a
model honours that mask is checked on the model itself before packing is used
(``engine.train.step.takes_record_masks``); where it does not, records are not packed.

``data.packing`` (on by default) packs where that is safe (the model keeps records apart)
and pays (:func:`packing_pays`: records average at most half of ``max_seq_len``, so a row
holds two or more). Packing then fills each sequence of the batch: more real tokens per step
(measured: bench/e2e_vs_mlx_lm.py --packing), and fewer, fuller steps per epoch.
"""

from __future__ import annotations

from bisect import bisect_left, insort

import numpy as np

from engine.data.tokenize import TokenizedSet

SEGMENT_START = 2  # weight flag on a packed record's first token (bit 0 stays "target")
TARGET = 1


def packing_pays(data: TokenizedSet, max_seq_len: int) -> bool:
    """Whether packed rows would hold two records or more on average."""
    return len(data) > 1 and float(data.lengths().mean()) <= max_seq_len / 2


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
            w[:1] = SEGMENT_START  # a record starts here; its first token is not a target
            weights.append(w)
        out.append(
            np.concatenate([data.tokens[i] for i in members]),
            np.concatenate(weights),
            data.sources[members[0]],
        )
    return out
