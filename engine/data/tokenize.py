"""Records -> token ids with per-token training weights (prompt masking), and truncation.

``weights[i] == 1`` means ``tokens[i]`` is a trained target, predicted from ``tokens[:i]``;
``weights[0]`` is always 0 (nothing predicts the first token).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.data.problems import ProblemLog
from engine.data.records import Record
from engine.data.templates import (
    Segment,
    TemplateError,
    fallback_segments,
    has_chat_template,
    render_record,
    turn_end,
)

log = logging.getLogger(__name__)


@dataclass
class TokenizedSet:
    """Items of (tokens int32, weights uint8), plus each item's source (file, line)."""

    tokens: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    sources: list[tuple[str, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.tokens[i], self.weights[i]

    def lengths(self) -> np.ndarray:
        return np.array([len(t) for t in self.tokens], dtype=np.int64)

    def append(self, tokens: np.ndarray, weights: np.ndarray, source: tuple[str, int]) -> None:
        self.tokens.append(np.asarray(tokens, dtype=np.int32))
        self.weights.append(np.asarray(weights, dtype=np.uint8))
        self.sources.append(source)

    def num_tokens(self) -> int:
        return int(sum(len(t) for t in self.tokens))

    def num_trained(self) -> int:
        return int(sum(int((w & 1).sum()) for w in self.weights))  # bit 1 marks packed records

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(all tokens, all weights, offsets of length n+1): a compact form to ship or save."""
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(self.lengths())

        def cat(xs, dt):
            return np.concatenate(xs) if xs else np.zeros(0, dt)

        return cat(self.tokens, np.int32), cat(self.weights, np.uint8), offsets

    @classmethod
    def from_flat(
        cls, tokens: np.ndarray, weights: np.ndarray, offsets: np.ndarray
    ) -> TokenizedSet:
        out = cls()
        for a, b in zip(offsets[:-1], offsets[1:], strict=False):
            out.append(tokens[a:b], weights[a:b], ("", 0))
        return out

    def fingerprint(self) -> str:
        """sha256 of the flat arrays: two workers with the same fingerprint hold the same data."""
        h = hashlib.sha256()
        for a in self.flat():
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def save(self, path: str | Path) -> None:
        t, w, o = self.flat()
        np.savez(path, tokens=t, weights=w, offsets=o)

    @classmethod
    def load(cls, path: str | Path) -> TokenizedSet:
        with np.load(path) as z:
            return cls.from_flat(z["tokens"], z["weights"], z["offsets"])


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode_segments(
    segments: list[Segment], tokenizer: Any, joint: bool
) -> tuple[list[int], list[int]]:
    """Token ids and 0/1 flags. ``joint``: each run of text between special tokens is encoded
    as one string, and a boundary sits where the prefix's tokens stop matching (a token that
    straddles a boundary belongs to the segment after it)."""
    tokens: list[int] = []
    flags: list[int] = []
    run: list[Segment] = []

    def flush() -> None:
        if not run:
            return
        if not joint:
            for s in run:
                ids = _encode(tokenizer, s.text)
                tokens.extend(ids)
                flags.extend([int(s.trained)] * len(ids))
        else:
            full = "".join(s.text for s in run)
            ids = _encode(tokenizer, full)
            starts, cut = [0], 0
            for s in run[:-1]:
                cut += len(s.text)
                starts.append(max(starts[-1], _common_prefix(_encode(tokenizer, full[:cut]), ids)))
            starts.append(len(ids))
            for s, a, b in zip(run, starts, starts[1:], strict=False):
                flags.extend([int(s.trained)] * (b - a))
            tokens.extend(ids)
        run.clear()

    merged: list[Segment] = []
    for s in segments:  # neighbouring text with the same flag is one string
        if (
            merged
            and s.token_id is None
            and merged[-1].token_id is None
            and merged[-1].trained == s.trained
        ):
            merged[-1] = Segment(merged[-1].text + s.text, s.trained)
        else:
            merged.append(s)
    for s in merged:
        if s.token_id is None:
            run.append(s)
        else:
            flush()
            tokens.append(s.token_id)
            flags.append(int(s.trained))
    flush()
    return tokens, flags


def tokenize_record(
    record: Record, tokenizer: Any, mask_prompt: bool = True
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(tokens, weights, template_stable) of one record, untruncated. Raises TemplateError."""
    segs, joint, stable = render_record(record, tokenizer)
    ids, flags = encode_segments(segs, tokenizer, joint)
    weights = np.array(flags, dtype=np.uint8) if mask_prompt else np.ones(len(ids), dtype=np.uint8)
    if len(weights):
        weights[0] = 0
    return np.array(ids, dtype=np.int32), weights, stable


def encode_prompt(
    messages: list[dict[str, Any]], tokenizer: Any, tools: list | None = None
) -> list[int]:
    """Token ids to generate an answer after ``messages`` exactly as training rendered them:
    with a chat template, the tokens before each trained answer are these for the
    conversation before it (generation must also stop on ``stop_token_ids``)."""
    if has_chat_template(tokenizer):
        kwargs: dict[str, Any] = {"tools": tools} if tools else {}
        return _encode(
            tokenizer,
            tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **kwargs
            ),
        )
    segs = fallback_segments(
        Record("", 0, messages=messages, tools=tools), tokenizer, add_generation_prompt=True
    )
    return encode_segments(segs, tokenizer, joint=False)[0]


@dataclass
class TokenizeCounts:
    truncated: int = 0
    no_target: int = 0
    template_unstable: int = 0
    no_turn_end: bool = False  # the chat template closes answers without a special token


def tokenize_records(
    records: list[Record], tokenizer: Any, max_seq_len: int, mask_prompt: bool, problems: ProblemLog
) -> tuple[TokenizedSet, TokenizeCounts]:
    """Tokenize, truncate to ``max_seq_len`` and drop records left with no trained token."""
    out, counts = TokenizedSet(), TokenizeCounts()
    for rec in records:
        try:
            tokens, weights, stable = tokenize_record(rec, tokenizer, mask_prompt)
        except TemplateError as e:
            problems.error(rec.file, rec.line, str(e))
            continue
        except Exception as e:  # a tokenizer's own failure must not end the whole read
            problems.error(rec.file, rec.line, f"the tokenizer failed on this record: {e}")
            continue
        counts.template_unstable += not stable
        if len(tokens) > max_seq_len:
            counts.truncated += 1
            tokens, weights = tokens[:max_seq_len], weights[:max_seq_len]
        if not weights.any():
            counts.no_target += 1
            problems.warning(
                rec.file,
                rec.line,
                f"no trained token within max_seq_len={max_seq_len} "
                f"(the prompt alone fills it); record skipped",
            )
            continue
        out.append(tokens, weights, (rec.file, rec.line))
    chats = [r for r in records if not r.is_text]
    if chats and has_chat_template(tokenizer) and turn_end(tokenizer) is None:
        counts.no_turn_end = True
        problems.warning(
            chats[0].file,
            None,
            "the chat template closes an answer with no special token after it: the model "
            "cannot learn where an answer ends (generation stops only at max_tokens or EOS)",
        )
    if counts.template_unstable:
        problems.warning(
            records[0].file,
            None,
            f"the chat template is not prefix-stable for {counts.template_unstable} "
            "records: only their last assistant turn is trained",
        )
    return out, counts
