"""The sampler is a pure function of (seed, step): splits are exact, epochs cover every item."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from engine.data import BatchSampler, eval_batches, split_batch

LENGTHS = np.random.default_rng(3).integers(5, 300, size=103)


@pytest.mark.parametrize("world, accum", [(1, 1), (2, 1), (3, 2), (4, 4), (5, 3)])
def test_ranks_and_micro_batches_union_is_the_global_batch(world, accum):
    s = BatchSampler(LENGTHS, batch_size=16, seed=1)
    for step in range(0, 40, 7):
        batch = s.global_batch(step)
        parts = [s.micro_batches(step, r, world, accum) for r in range(world)]
        flat = [i for rank in parts for mb in rank for i in mb]
        assert flat == batch  # contiguous, in order, nothing lost or repeated
        sizes = [sum(len(mb) for mb in rank) for rank in parts]
        assert max(sizes) - min(sizes) <= 1  # balanced like np.array_split
        assert all(len(rank) <= accum for rank in parts)


def test_pure_function_of_seed_and_step():
    a, b = BatchSampler(LENGTHS, 8, seed=5), BatchSampler(LENGTHS, 8, seed=5)
    forward = [a.global_batch(s) for s in range(60)]
    backward = [b.global_batch(s) for s in reversed(range(60))][::-1]
    assert forward == backward  # positioning at any step needs no state: exact resume
    assert forward != [BatchSampler(LENGTHS, 8, seed=6).global_batch(s) for s in range(60)]


def test_every_epoch_covers_every_item_once():
    n, bsz = len(LENGTHS), 8
    s = BatchSampler(LENGTHS, bsz, seed=0, bucket_window=1)
    assert s.steps_per_epoch == 13
    counts = Counter(i for step in range(n) for i in s.global_batch(step))  # n steps = 8 epochs
    assert set(counts) == set(range(n)) and set(counts.values()) == {bsz}
    first = [i for step in range(12) for i in s.global_batch(step)]  # wholly inside epoch 0
    assert len(set(first)) == len(first) == 96
    assert s.epoch_of(0) == 0 and s.epoch_of(13) == 1


def test_bucketing_windows_keep_exact_coverage_and_cut_padding():
    n, bsz = len(LENGTHS), 8
    s = BatchSampler(LENGTHS, bsz, seed=0, bucket_window=4)
    steps = n * 4  # 32 epochs, a whole number of windows of 4 batches
    counts = Counter(i for step in range(steps) for i in s.global_batch(step))
    assert set(counts.values()) == {32}

    def padding(sampler):
        return sum(
            len(b) * LENGTHS[b].max() - LENGTHS[b].sum()
            for b in (sampler.global_batch(k) for k in range(100))
        )

    assert padding(s) < 0.6 * padding(BatchSampler(LENGTHS, bsz, seed=0, bucket_window=1))


def test_small_dataset_still_gives_full_batches():
    s = BatchSampler([10, 20, 30], batch_size=8, seed=0)
    assert s.steps_per_epoch == 1 and len(s.global_batch(0)) == 8


def test_bad_arguments():
    with pytest.raises(ValueError, match="no items"):
        BatchSampler([], 4, 0)
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        split_batch([1, 2, 3], 2, 2, 1)
    with pytest.raises(ValueError):
        BatchSampler([1], 4, 0).global_batch(-1)


def test_split_batch_leaves_out_empty_micro_batches():
    assert split_batch([7, 8, 9], 0, 2, 4) == [[7], [8]]
    assert split_batch([7, 8, 9], 1, 2, 4) == [[9]]
    assert split_batch([7], 1, 2, 1) == []


def test_eval_batches_cover_everything_once_in_length_order():
    batches = eval_batches(LENGTHS, 10)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(LENGTHS)))
    assert list(LENGTHS[flat]) == sorted(LENGTHS)


def test_uneven_shares_cut_the_same_global_batch():
    s = BatchSampler(LENGTHS, batch_size=16, seed=1)
    shares = [11, 0, 4, 1]
    for step in range(0, 30, 7):
        parts = [s.micro_batches(step, r, 4, 3, shares) for r in range(4)]
        assert [i for rank in parts for mb in rank for i in mb] == s.global_batch(step)
        assert [sum(len(mb) for mb in rank) for rank in parts] == shares
        assert [len(rank) for rank in parts] == [3, 0, 3, 1]  # never an empty micro-batch


@pytest.mark.parametrize(
    "shares, needle",
    [([3, 3], "sum to 6, the global batch has 5"), ([5], "expected 2 \\(one per rank\\), got 1"),
     ([6, -1], "whole numbers >= 0")],
)  # fmt: skip
def test_shares_that_do_not_fit_the_batch_name_the_field(shares, needle):
    with pytest.raises(ValueError, match=f"shares: .*{needle}"):
        split_batch([1, 2, 3, 4, 5], 0, 2, 1, shares)
