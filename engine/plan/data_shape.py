"""How wide a step's sequences really are, from the tokenized dataset.

A step does not compute ``max_seq_len`` tokens per sequence: the sampler buckets items by
length (engine/data/sampler.py) and collate pads each micro-batch only to its longest item
(rounded up as engine.data.collate.padded_width does). So a step computes ``width`` padded tokens per sequence on average, and
the loss counts ``trained`` of them (targets: no padding, no masked prompt), which is what
Orchard calls tokens/s (engine/plan/efficiency.py). Both are measured here by running the
run's own sampler over the item lengths: no model, no MLX.

The lengths come from a tokenization that already happened where possible: the preflight
(engine/preflight.py) hands its tokenized set to ``remember``, and ``lengths_for`` finds it
again for the same dataset, tokenizer and data settings in this process. Only a process
that never tokenized the data (the engine process of an app run) tokenizes it here once.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.data.collate import PAD_MULTIPLE, padded_width
from engine.data.sampler import BatchSampler, split_batch

log = logging.getLogger(__name__)

SAMPLED_STEPS = 256  # global batches averaged over (at least one bucketing window's worth)
MEMO_SIZE = 4  # datasets whose lengths this process keeps


@dataclass(frozen=True)
class ItemLengths:
    """Per training item: its token count and how many of its tokens are trained targets."""

    lengths: np.ndarray  # tokens per item (int64)
    # trained target tokens per item: bit 0 of weights[1:] (bit 1 flags a packed record's start)
    trained: np.ndarray


@dataclass(frozen=True)
class DataShape:
    """Tokens per sequence of an average step, as the run computes and counts them."""

    width: float  # padded tokens per sequence a step computes (mean over steps)
    trained: float  # trained target tokens per sequence (what tokens/s counts)
    longest: int  # the widest micro-batch's width: what memory must hold
    attention_width: float  # sum(w^2)/sum(w) over sequences: attention's cost grows with w
    items: int  # training items measured (0: not measured, the max_seq_len fallback)
    note: str  # where the figures come from, for the plan's reason and the docs

    @property
    def measured(self) -> bool:
        return self.items > 0


def at_max_seq_len(max_seq_len: int, why: str) -> DataShape:
    """The fallback when the data is not known: every sequence full, every token trained."""
    return DataShape(float(max_seq_len), float(max_seq_len), max_seq_len, float(max_seq_len), 0,
                     f"sequences planned at max_seq_len {max_seq_len} ({why}); tokens/s then "
                     "counts every position, padding and prompts included")  # fmt: skip


def item_lengths(train_set: Any) -> ItemLengths:
    """From an engine.data TokenizedSet (its items' tokens and weights)."""
    lengths = np.array([len(t) for t in train_set.tokens], dtype=np.int64)
    trained = np.array([int((w[1:] & 1).sum()) for w in train_set.weights], dtype=np.int64)
    return ItemLengths(lengths, trained)


def collate_width(longest_item: int, multiple: int = PAD_MULTIPLE) -> int:
    """engine.data.collate's width for a micro-batch whose longest item has this many tokens
    (inputs are tokens[:-1], padded as collate pads them: engine.data.collate.padded_width)."""
    return padded_width(longest_item - 1, multiple)


def shape_of(items: ItemLengths, batch_size: int, seed: int, parts: int = 1,
             steps: int = SAMPLED_STEPS) -> DataShape:  # fmt: skip
    """The step shape of these items under the run's sampler: the first ``steps`` global
    batches (at least one epoch's worth when that is fewer), each cut into ``parts``
    contiguous micro-batches (workers x accumulation, as engine/data/sampler.py cuts them)."""
    n = len(items.lengths)
    if n == 0:
        raise ValueError("no training items to measure")
    sampler = BatchSampler(items.lengths, batch_size, seed)
    count = max(1, min(steps, max(sampler.steps_per_epoch, sampler.window)))
    padded = squares = trained = sequences = 0.0
    longest = 0
    for step in range(count):
        batch = sampler.global_batch(step)
        for micro in split_batch(batch, 0, 1, max(1, min(parts, len(batch)))):
            w = collate_width(int(items.lengths[micro].max()))
            longest = max(longest, w)
            padded += w * len(micro)
            squares += w * w * len(micro)
            trained += float(items.trained[micro].sum())
            sequences += len(micro)
    return DataShape(padded / sequences, trained / sequences, longest, squares / padded, n,
                     f"widths measured from the {n} tokenized training items "
                     f"({padded / sequences:.0f} padded tokens a sequence on average, "
                     f"{trained / sequences:.0f} of them trained)")  # fmt: skip


# ---- lengths, tokenized once per process ------------------------------------------------------
_memo: OrderedDict[tuple, ItemLengths] = OrderedDict()


def _key(job: Any) -> tuple | None:
    """What the tokenized lengths depend on: the dataset files (path, size, mtime), the data
    settings, the model (its tokenizer and template) and the seed (the validation hold-out)."""
    from engine.config import resolve_data_path, resolve_model_path

    paths = [Path(resolve_data_path(job.data.path)).expanduser()]
    if job.data.valid_path:
        paths.append(Path(job.data.valid_path).expanduser())
    stamp = []
    for p in paths:
        try:
            files = sorted(p.iterdir()) if p.is_dir() else [p]
            for f in files:
                st = f.stat()
                stamp.append((str(f.resolve()), st.st_size, st.st_mtime_ns))
        except OSError:
            return None
    model = str(resolve_model_path(job.model.path))
    return (tuple(stamp), repr(sorted(asdict(job.data).items())), model, job.run.seed)


def remember(job: Any, train_set: Any) -> ItemLengths:
    """Keep the lengths of a tokenization that just happened (the preflight's) for this job."""
    items = item_lengths(train_set)
    key = _key(job)
    if key is not None:
        _memo[key] = items
        _memo.move_to_end(key)
        while len(_memo) > MEMO_SIZE:
            _memo.popitem(last=False)
    return items


def lengths_for(job: Any) -> ItemLengths:
    """The job's training items' lengths: remembered, or tokenized now (as a worker does).
    Raises (a model or dataset that does not read) for the caller to fall back."""
    key = _key(job)
    if key is not None and key in _memo:
        _memo.move_to_end(key)
        return _memo[key]
    from engine.config import resolve_model_path
    from engine.data import prepare_data
    from engine.model import load_tokenizer

    tokenizer = load_tokenizer(resolve_model_path(job.model.path), job.model.trust_remote_code)
    data = prepare_data(job.data, tokenizer, seed=job.run.seed)
    return remember(job, data.train)


def shape_for(job: Any, workers: int) -> DataShape:
    """The step shape of ``job`` on ``workers`` workers; never raises: a dataset or tokenizer
    that cannot be read here gives the max_seq_len fallback, saying why."""
    try:
        items = lengths_for(job)
    except Exception as e:  # noqa: BLE001 - planning goes on without the data
        log.info("data widths not measured (%s): planning at max_seq_len", e)
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        return at_max_seq_len(job.data.max_seq_len, f"the dataset could not be read here: {why}")
    if not len(items.lengths):
        return at_max_seq_len(job.data.max_seq_len, "no training items")
    parts = max(1, workers) * max(1, job.run.grad_accum)
    return shape_of(items, job.run.batch_size, job.run.seed, parts)
