"""Which format a record looks like, and which format a whole file is (decided from ALL records)."""

from __future__ import annotations

from collections import Counter
from typing import Any

# Checked in this order: a record with both "messages" and "text" is a chat record.
SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("chat", ("messages",)),
    ("sharegpt", ("conversations",)),
    ("alpaca", ("instruction", "output")),
    ("completion", ("prompt", "completion")),
    ("text", ("text",)),
)
FORMATS = tuple(name for name, _ in SIGNATURES)
KEYS_HELP = (
    '"messages" (chat), "conversations" (sharegpt), "instruction"/"output" (alpaca), '
    '"prompt"/"completion" (completion) or "text" (text)'
)


def record_format(value: Any) -> str | None:
    """The format whose key is present, or None for a value that matches none."""
    if not isinstance(value, dict):
        return None
    for name, keys in SIGNATURES:
        if any(k in value for k in keys):
            return name
    return None


def choose_format(formats: list[str | None]) -> str | None:
    """The majority format among recognised records (ties go to the earlier signature)."""
    counts = Counter(f for f in formats if f is not None)
    if not counts:
        return None
    return max(counts, key=lambda f: (counts[f], -FORMATS.index(f)))
