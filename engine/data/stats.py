"""Dataset statistics for the report, the app's charts and the run log."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.data.records import Record
from engine.data.tokenize import TokenizedSet


@dataclass
class Histogram:
    """Token-length histogram: ``counts[i]`` items have length in ``[edges[i], edges[i+1])``."""

    edges: list[int]
    counts: list[int]


def length_histogram(lengths: np.ndarray, bins: int = 20) -> Histogram:
    if len(lengths) == 0:
        return Histogram([0, 1], [0])
    top = int(lengths.max()) + 1
    width = max(1, -(-top // bins))
    edges = np.arange(0, top + width, width)
    counts, _ = np.histogram(lengths, bins=edges)
    return Histogram(edges.astype(int).tolist(), counts.astype(int).tolist())


def count_duplicates(records: list[Record]) -> int:
    """Records whose content exactly repeats an earlier record's."""
    keys = [r.key() for r in records]
    return len(keys) - len(set(keys))


def count_overlap(train: list[Record], other: list[Record]) -> int:
    """Records of ``other`` (valid or test) whose content also appears in train."""
    seen = {r.key() for r in train}
    return sum(r.key() in seen for r in other)


@dataclass
class DataStats:
    records: dict[str, int] = field(default_factory=dict)  # per split
    tokens: dict[str, int] = field(default_factory=dict)
    trained_tokens: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    no_target: int = 0
    duplicates: int = 0
    overlap: int = 0  # valid records also in train
    histogram: Histogram = field(default_factory=lambda: Histogram([0, 1], [0]))
    max_len: int = 0
    mean_len: float = 0.0

    def lines(self) -> list[str]:
        out = []
        for split, n in self.records.items():
            line = f"{split}: {n} records"
            if split in self.tokens:
                line += f", {self.tokens[split]} tokens ({self.trained_tokens[split]} trained)"
            out.append(line)
        if self.max_len:
            out.append(f"lengths: mean {self.mean_len:.1f}, max {self.max_len} tokens")
        if self.tokens:
            out.append(f"truncated: {self.truncated}; no trained token left: {self.no_target}")
        out.append(
            f"exact duplicates: {self.duplicates}; valid records also in train: {self.overlap}"
        )
        return out


def compute_stats(
    records: dict[str, list[Record]],
    sets: dict[str, TokenizedSet],
    truncated: int = 0,
    no_target: int = 0,
) -> DataStats:
    stats = DataStats(truncated=truncated, no_target=no_target)
    stats.records = {k: len(v) for k, v in records.items()}
    for split, data in sets.items():
        stats.tokens[split] = data.num_tokens()
        stats.trained_tokens[split] = data.num_trained()
    train = records.get("train", [])
    stats.duplicates = count_duplicates(train)
    stats.overlap = count_overlap(train, records.get("valid", []))
    if "train" in sets and len(sets["train"]):
        lengths = sets["train"].lengths()
        stats.histogram = length_histogram(lengths)
        stats.max_len, stats.mean_len = int(lengths.max()), float(lengths.mean())
    return stats
