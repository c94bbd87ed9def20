"""ZeRO-1's global gradient norm is the other modes' float64 norm, not a float32 rounding.

The shards' sums of squares cross a float32 wire; sent as one float32 they moved the norm,
and so the clip factor, by ~1e-8 relative: enough for a reduce-scatter run to leave the
all-reduce curve (1.8e-4 of an adapter tensor's scale after 8 steps of the runtime's tiny
job), and for a checkpoint resumed in another mode to miss the curve it came from.
"""

from __future__ import annotations

import numpy as np

from engine.dist.local_cluster import run_local
from tests.dist.workers import optimizer_run


def test_reduce_scatter_clips_with_the_same_norm_as_all_reduce():
    zero = run_local(3, optimizer_run, "reduce-scatter", mode="reduce-scatter", timeout_s=180)
    full = run_local(3, optimizer_run, "all-reduce", mode="all-reduce", timeout_s=180)
    (want, want_hist, _, _), (got, got_hist, _, _) = full[0], zero[0]
    norms = np.array([[h[2] for h in want_hist], [h[2] for h in got_hist]], np.float64)
    assert norms.max() > 1.0  # some steps are clipped (grad_clip=1), so the norm counts
    rel = np.abs(norms[1] - norms[0]) / norms[0]
    assert rel.max() <= 1e-12, f"ZeRO-1's norm differs by {rel.max():.2e}"
    for name, w in want.items():
        gap = float(np.abs(got[name] - w).max() / np.abs(w).max())
        assert gap <= 1e-6, f"{name}: relative difference {gap:.2e}"
