"""The world-size-independent state: split for any worker count and mode, gathered back."""

import mlx.core as mx
import numpy as np
import pytest

from engine.dist.shards import shard_bounds
from engine.runtime.full_state import FullState, from_checkpoint, gather, split, to_checkpoint


def _full(n: int = 11) -> FullState:
    rng = np.random.default_rng(0)
    p, m, v = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    return FullState(step=7, params=p, m=m, v=np.abs(v), adam_step=6, opt_steps=7,
                     loss_scale={"scale": 512.0, "good_steps": 3, "skipped_steps": 1})  # fmt: skip


@pytest.mark.parametrize("mode", ["all-reduce", "ring", "reduce-scatter", "parameter-server"])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_split_then_gather_gives_back_the_same_state(mode, world):
    full = _full()
    parts = split(full, mode, world)
    assert [meta["rank"] for meta, _ in parts] == list(range(world))
    back = gather(parts)
    for name in ("params", "m", "v"):
        np.testing.assert_array_equal(getattr(back, name), getattr(full, name))
    assert (back.step, back.adam_step, back.opt_steps, back.loss_scale) == (
        7,
        6,
        7,
        full.loss_scale,
    )


def test_zero_shards_follow_the_collectives_bounds():
    parts = split(_full(), "reduce-scatter", 3)
    assert [(m["lo"], m["hi"]) for m, _ in parts] == shard_bounds(11, 3)
    assert sum(t["m"].size for _, t in parts) == 11


def test_a_checkpoint_round_trip_and_the_older_per_rank_layout():
    full = _full()
    arrays, meta = to_checkpoint(full)
    assert "world" not in meta and set(arrays) == {"params", "m", "v"}
    back = from_checkpoint(arrays, meta, 7)
    np.testing.assert_array_equal(back.v, full.v)
    assert back.loss_scale == full.loss_scale
    # the layout before this change: params once, rank<r>.m/v shards, per-worker meta
    parts = split(full, "reduce-scatter", 2)
    old = {"params": mx.array(full.params)}
    for r, (_, t) in enumerate(parts):
        old |= {f"rank{r}.m": mx.array(t["m"]), f"rank{r}.v": mx.array(t["v"])}
    legacy = from_checkpoint(old, {"workers": [m for m, _ in parts]}, 7)
    np.testing.assert_array_equal(legacy.m, full.m)


def test_a_part_that_does_not_fit_its_range_is_named():
    meta, tensors = split(_full(), "reduce-scatter", 2)[1]
    tensors["m"] = tensors["m"][:-1]
    with pytest.raises(ValueError, match="rank 0: m has"):
        gather([(meta, tensors)])


def test_one_workers_whole_state_is_taken_without_copies():
    """A snapshot of one worker's 46M-parameter state is 550 MB: gather keeps its arrays."""
    n = 1000
    params, m, v = (np.full(n, x, np.float32) for x in (1.0, 2.0, 3.0))
    full = gather([({"lo": 0, "hi": n, "step": 4, "steps": 4, "adam_step": 4},
                    {"params": params, "m": m, "v": v})])  # fmt: skip
    assert np.shares_memory(full.params, params)
    assert np.shares_memory(full.m, m) and np.shares_memory(full.v, v)
    assert (full.step, full.adam_step) == (4, 4)
