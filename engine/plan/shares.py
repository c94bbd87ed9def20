"""How a global batch is split over workers of different speeds: whole sequences by rank.

Pure and light (no MLX, no network): the run's balancer (engine/runtime/balance.py) and the
planner (engine/plan/planner.py) both split with these, so a plan predicts the split the run
makes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence


def shares_for(
    batch_size: int, speeds: Sequence[float], overheads: Sequence[float] | None = None
) -> list[int]:
    """Whole sequences by rank that finish ``batch_size`` soonest, rank r taking
    ``overheads[r] + s / speeds[r]`` seconds for s > 0 sequences (no overheads: only the
    speeds' ratios matter). Each sequence goes where it would finish first, which is optimal
    for identical items on machines of different speeds and start times; a tie goes to the
    rank holding fewer, so a worker gets none only when one sequence there would finish after
    the whole step elsewhere (it is better out). Equal speeds and overheads give
    np.array_split's sizes. A speed <= 0 or not finite gets nothing (all such: equal)."""
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    if not speeds:
        raise ValueError("shares_for: no workers")
    v = [float(x) if math.isfinite(x) and x > 0 else 0.0 for x in speeds]
    if not any(v):
        v = [1.0] * len(v)
    a = [max(0.0, float(x)) if math.isfinite(x) else 0.0 for x in overheads or [0.0] * len(v)]

    def placed(t: float) -> list[int]:  # sequences each rank finishes by time t
        return [max(0, math.floor((t - o) * x)) if x else 0 for o, x in zip(a, v, strict=True)]

    # every sequence finishing before ``lo`` is in the optimum (fewer than batch_size do), so
    # the greedy fill starts there and places only the last few one by one
    lo, hi = 0.0, max(a) + (batch_size + 1) / max(v)
    for _ in range(64):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sum(placed(mid)) < batch_size else (lo, mid)
    shares = [max(0, s - 1) for s in placed(lo)]
    heap = [
        (o + (s + 1) / x, s, r) for r, (s, o, x) in enumerate(zip(shares, a, v, strict=True)) if x
    ]
    heapq.heapify(heap)
    for _ in range(batch_size - sum(shares)):
        _, _, r = heapq.heappop(heap)
        shares[r] += 1
        heapq.heappush(heap, (a[r] + (shares[r] + 1) / v[r], shares[r], r))
    return shares


def makespan(
    shares: Sequence[int], speeds: Sequence[float], overheads: Sequence[float] | None = None
) -> float:
    """The gradient time of a step under ``shares``: its slowest worker's (a worker with no
    share computes nothing and waits for nobody)."""
    worst = 0.0
    for r, (s, v) in enumerate(zip(shares, speeds, strict=True)):
        if s:
            o = overheads[r] if overheads else 0.0
            worst = max(worst, o + s / v if v > 0 and math.isfinite(v) else math.inf)
    return worst


def micro_batch_counts(shares: Sequence[int], caps: Sequence[int | None], accum: int) -> list[int]:
    """How many micro-batches each rank cuts its share into: ``accum`` (run.grad_accum), or
    more where ``share / accum`` sequences would not fit the rank's memory (``caps[r]``
    sequences per micro-batch; None: no limit). Never more micro-batches than sequences."""
    out = []
    for s, cap in zip(shares, caps, strict=True):
        k = max(1, min(accum, s))
        if cap is not None and s:
            k = max(k, math.ceil(s / max(cap, 1)))
        out.append(k)
    return out
