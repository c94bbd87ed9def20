"""Items -> one padded (B, T) batch of inputs, next-token targets and target weights.

T is the longest item minus one, rounded up to a multiple of 8, or of 1/8 of its power of
two when that is more (``padded_width``): fewer distinct shapes means fewer retraces and
compiles of the step. Padding has weight 0, so it never counts in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

PAD_MULTIPLE = 8


@dataclass
class Batch:
    inputs: np.ndarray  # (B, T) int32: tokens[:-1]
    targets: np.ndarray  # (B, T) int32: tokens[1:]
    weights: np.ndarray  # (B, T) float32: 1 where targets[b, t] is trained
    # (B, T) int32 for packed items: which record of its row each input token belongs to
    # (1, 2, ...; 0 for padding), so each record attends only to itself; None: not packed
    segments: np.ndarray | None = None

    @property
    def num_targets(self) -> int:
        return int(self.weights.sum())


def collate(
    items: list[tuple[np.ndarray, np.ndarray]], pad_id: int, multiple: int = PAD_MULTIPLE
) -> Batch:
    """``items`` are (tokens, weights) pairs, e.g. ``[data[i] for i in micro_batch]``."""
    if not items:
        raise ValueError("cannot collate an empty micro-batch")
    longest = max(len(t) for t, _ in items) - 1
    width = padded_width(longest, multiple)
    inputs = np.full((len(items), width), pad_id, dtype=np.int32)
    targets = np.full((len(items), width), pad_id, dtype=np.int32)
    weights = np.zeros((len(items), width), dtype=np.float32)
    packed = any(len(w) and int(w.max()) > 1 for _, w in items)  # SEGMENT_START flags
    segments = np.zeros((len(items), width), dtype=np.int32) if packed else None
    for row, (tokens, w) in enumerate(items):
        n = len(tokens) - 1
        if n <= 0:
            continue
        inputs[row, :n] = tokens[:-1]
        targets[row, :n] = tokens[1:]
        weights[row, :n] = w[1:] & 1
        if segments is not None:
            segments[row, :n] = np.cumsum(w[:-1] > 1) + (0 if w[0] > 1 else 1)
    return Batch(inputs, targets, weights, segments)


def padded_width(longest: int, multiple: int = PAD_MULTIPLE) -> int:
    """``longest`` rounded up to a step that grows with it: 1/8 of its power of two, at
    least ``multiple``. So at most 8 widths per doubling of length (every new width
    recompiles the step: seconds on a CPU) and at most 1/8 of a row is padding."""
    step = max(multiple, 1 << max(0, longest.bit_length() - 4))
    return max(multiple, -(-longest // step) * step)


def pad_id_for(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS, else 0 (padding is never a target anyway)."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0
