"""DataSpec + tokenizer -> train/valid token sets ready for the sampler, or a DatasetError."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import DataSpec, resolve_data_path
from engine.data.collate import pad_id_for
from engine.data.dataset import read_dataset, read_file
from engine.data.pack import pack, packing_pays
from engine.data.problems import DatasetError, ProblemLog
from engine.data.records import Record
from engine.data.stats import DataStats, compute_stats
from engine.data.templates import has_chat_template
from engine.data.tokenize import TokenizedSet, tokenize_records

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    train: TokenizedSet
    valid: TokenizedSet
    stats: DataStats
    problems: ProblemLog  # warnings only (errors raise)
    format: str | None
    template: str  # "chat template" or "fallback"
    pad_id: int
    test: TokenizedSet | None = None
    packed: bool = False
    records: dict[str, int] = field(default_factory=dict)


def split_records(
    records: list[Record], fraction: float, seed: int
) -> tuple[list[Record], list[Record]]:
    """Seeded, deterministic hold-out of ``fraction`` of the records (file order kept)."""
    n = len(records)
    n_valid = int(round(n * fraction))
    if fraction > 0 and n >= 2:
        n_valid = min(max(1, n_valid), n - 1)
    else:
        n_valid = 0
    held = set(np.random.default_rng([seed, 0x5EED]).permutation(n)[:n_valid].tolist())
    train = [r for i, r in enumerate(records) if i not in held]
    valid = [r for i, r in enumerate(records) if i in held]
    return train, valid


def prepare_data(
    spec: DataSpec, tokenizer: Any, seed: int, packing: bool | None = None
) -> PreparedData:
    """Read, validate, split, tokenize (and pack) a dataset. Raises DatasetError on any error.

    ``packing`` overrides ``spec.packing`` (a trainer whose model cannot keep packed
    records apart passes False: see engine/data/pack.py)."""
    result = read_dataset(resolve_data_path(spec.path), spec.format, spec.max_problems)
    problems = result.problems
    splits = dict(result.splits)
    if spec.valid_path:
        if "valid" in splits:
            problems.warning(
                spec.valid_path,
                None,
                f"data.valid_path replaces the folder's {result.files['valid']}",
            )
        splits["valid"], _ = read_file(Path(spec.valid_path), spec.format, problems)
    if problems.errors:
        raise DatasetError(problems)
    if "valid" not in splits:
        splits["train"], splits["valid"] = split_records(splits["train"], spec.valid_fraction, seed)
        if spec.valid_fraction > 0 and not splits["valid"]:
            problems.warning(
                result.files.get("train", spec.path),
                None,
                "too few records to hold any out for validation",
            )
    sets: dict[str, TokenizedSet] = {}
    truncated = no_target = 0
    for split, records in splits.items():
        sets[split], counts = tokenize_records(
            records, tokenizer, spec.max_seq_len, spec.mask_prompt, problems
        )
        truncated += counts.truncated
        no_target += counts.no_target
    if not len(sets["train"]) and not problems.errors:
        problems.error(result.files.get("train", spec.path), None, "no trainable records")
    if problems.errors:
        raise DatasetError(problems)
    stats = compute_stats(splits, sets, truncated, no_target)
    packed = spec.packing if packing is None else packing
    if packed and not packing_pays(sets["train"], spec.max_seq_len):
        log.info("records not packed: they average %.0f tokens, over half of data.max_seq_len "
                 "(%d)", float(sets["train"].lengths().mean()), spec.max_seq_len)  # fmt: skip
        packed = False
    if packed:
        for split in sets:
            sets[split] = pack(sets[split], spec.max_seq_len, seed)
    log.info("data ready: %s", "; ".join(stats.lines()))
    return PreparedData(
        train=sets["train"],
        valid=sets["valid"],
        test=sets.get("test"),
        stats=stats,
        problems=problems,
        format=result.format,
        template="chat template" if has_chat_template(tokenizer) else "fallback",
        pad_id=pad_id_for(tokenizer),
        packed=packed,
        records={k: len(v) for k, v in splits.items()},
    )
