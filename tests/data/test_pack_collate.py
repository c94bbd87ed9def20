"""Packing keeps every token and never trains across an item boundary; collate shifts by one."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data import Record, TokenizedSet, collate, pack, tokenize_record
from engine.data.collate import pad_id_for


def _set(lengths, seed=0):
    rng = np.random.default_rng(seed)
    data = TokenizedSet()
    for i, n in enumerate(lengths):
        w = (rng.random(n) < 0.5).astype(np.uint8)
        w[0] = 0
        data.append(rng.integers(3, 500, n), w, ("f", i + 1))
    return data


def test_pack_fits_and_keeps_every_token():
    lengths = np.random.default_rng(1).integers(3, 60, size=200)
    data = _set(lengths)
    packed = pack(data, 128, seed=0)
    assert packed.lengths().max() <= 128
    assert packed.num_tokens() == data.num_tokens() and packed.num_trained() == data.num_trained()
    assert len(packed) <= np.ceil(lengths.sum() / 128) * 1.1  # best-fit is tight
    assert packed.fingerprint() == pack(data, 128, seed=0).fingerprint()


def test_pack_first_token_of_each_item_is_not_a_target(tok):
    recs = [
        Record("f", i, text=f"Pip picked {n} apples.")
        for i, n in enumerate(["two", "three", "four"])
    ]
    data = TokenizedSet()
    for r in recs:
        t, w, _ = tokenize_record(r, tok)
        data.append(t, w, (r.file, r.line))
    ((packed_tokens, packed_weights),) = [pack(data, 512, seed=0)[0]]
    starts = np.flatnonzero(packed_tokens == tok.bos_token_id)
    # each record's first token is flagged as a record start (2), never a target (bit 0)
    assert len(starts) == 3 and (packed_weights[starts] == 2).all()
    assert (packed_weights & 1).sum() == sum(int(w.sum()) for w in data.weights)
    b = collate([(packed_tokens, packed_weights)], 0)
    seg = b.segments[0, : len(packed_tokens) - 1]
    assert seg.tolist() == sorted(seg.tolist()) and set(seg.tolist()) == {1, 2, 3}
    assert b.weights.sum() == (packed_weights & 1).sum()


def test_collate_shift_and_padding():
    items = [
        (np.array([1, 5, 6, 7, 2], np.int32), np.array([0, 0, 1, 1, 1], np.uint8)),
        (np.array([1, 9, 2], np.int32), np.array([0, 1, 1], np.uint8)),
    ]
    b = collate(items, pad_id=0)
    assert b.inputs.shape == b.targets.shape == b.weights.shape == (2, 8)
    assert b.inputs[0, :4].tolist() == [1, 5, 6, 7] and b.targets[0, :4].tolist() == [5, 6, 7, 2]
    assert b.weights[0].tolist() == [0, 1, 1, 1, 0, 0, 0, 0]
    assert b.inputs[1].tolist() == [1, 9, 0, 0, 0, 0, 0, 0] and b.weights[1, :2].tolist() == [1, 1]
    assert b.num_targets == 5
    assert collate(items, 0, multiple=1).inputs.shape == (2, 4)
    with pytest.raises(ValueError, match="empty micro-batch"):
        collate([], 0)


def test_flat_round_trip_and_pad_id(tmp_path, tok):
    data = _set([5, 9, 2])
    data.save(tmp_path / "d.npz")
    back = TokenizedSet.load(tmp_path / "d.npz")
    assert back.fingerprint() == data.fingerprint() and len(back) == 3
    assert pad_id_for(tok) == tok.eos_token_id  # stories260K has no pad token
