"""Every collective on 2 and 3 real processes over real sockets, against numpy references.

Sizes cover odd lengths, lengths not divisible by N, and fewer elements than ranks (empty
shards); a small chunk size forces multi-chunk pipelining in the ring.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.dist.local_cluster import run_local
from engine.dist.shards import shard_bounds
from tests.dist.workers import SIZES, compressed, data, exercise


def _check(results, nprocs):
    for n in SIZES:
        xs = [data(r, n) for r in range(nprocs)]
        ref = np.sum(np.stack(xs).astype(np.float64), axis=0)
        bounds = shard_bounds(n, nprocs)
        for r, res in enumerate(results):
            got = res[n]
            np.testing.assert_allclose(got["all_reduce"], ref, rtol=1e-5, atol=1e-5)
            a, b = bounds[r]
            np.testing.assert_allclose(got["reduce_scatter"], ref[a:b], rtol=1e-5, atol=1e-5)
            want_ag = np.concatenate([xs[j][lo:hi] * 2 for j, (lo, hi) in enumerate(bounds)])
            assert np.array_equal(got["all_gather"], want_ag)  # all-gather is exact
            assert np.array_equal(got["broadcast"], xs[nprocs - 1])
            if r == 1:
                np.testing.assert_allclose(got["reduce"], ref, rtol=1e-5, atol=1e-5)
            else:
                assert got["reduce"] is None
            # every rank holds bit-identical sums (workers must not drift apart)
            assert np.array_equal(got["all_reduce"], results[0][n]["all_reduce"])


@pytest.mark.parametrize("nprocs", [2, 3])
@pytest.mark.parametrize("mode", ["all-reduce", "ring"])
def test_collectives_match_numpy(mode, nprocs):
    # 4 KiB chunks: the 30,011-element buffer travels as many pipelined chunks. Only the
    # 1-element buffer takes the one-shot path; 2 elements over 3 ranks leave a shard empty.
    results = run_local(
        nprocs, exercise, mode=mode, chunk_bytes=4096, one_shot_bytes=4, timeout_s=120
    )
    _check(results, nprocs)


@pytest.mark.parametrize("mode,codec", [("ring", "bf16"), ("all-reduce", "fp16")])
def test_compression_error_is_bounded_and_halves_bytes(mode, codec):
    results = run_local(
        3, compressed, mode=mode, compression=codec, one_shot_bytes=0, timeout_s=120
    )
    xs = [data(r, 50_000) for r in range(3)]
    ref = np.sum([x.astype(np.float64) for x in xs], axis=0)
    scale = np.sum([np.abs(x) for x in xs], axis=0)
    eps = {"bf16": 2.0**-8, "fp16": 2.0**-11}[codec]
    for full, _shard, _ in results:
        # each of the <= 2(N-1) roundings adds at most eps of the running magnitude
        assert np.all(np.abs(full - ref) <= 2 * 3 * eps * scale + 1e-6)
        assert np.array_equal(full, results[0][0])
    # all-reduce + reduce-scatter of 50k floats, sent as 2 bytes each instead of 4
    assert results[0][2] < 50_000 * 4 * 2


def test_mlx_ring_backend_two_processes(tmp_path):
    from engine.dist.mlx_env import local_ring_envs

    results = run_local(2, exercise, mode="mlx", env=local_ring_envs(tmp_path, 2), timeout_s=120)
    _check(results, 2)
