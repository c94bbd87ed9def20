"""How long one step's gradient synchronisation takes in each sync mode, on these links.

Every mode is modelled by what each worker sends and receives and how many rounds of latency
it waits, as engine/dist implements it (N workers, S gradient values, w wire bytes per value:
4, or 2 with bf16/fp16; parameters always travel as exact fp32):

| mode | per worker, each way | rounds |
| --- | --- | --- |
| all-reduce (direct) | 2 (N-1)/N S w per 32 MiB bucket (reduce-scatter + all-gather) | 2 a bucket |
| ring | 2 (N-1)/N S w, neighbours only | 2 (N-1) a bucket |
| reduce-scatter (ZeRO-1) | (N-1)/N S w, then (N-1)/N S 4 (parameters) | 3 |
| parameter-server | S w up, S 4 down; rank 0 moves (N-1) times that | 2 |
| mlx | as ring, through MLX's own transport | 2 (N-1) |

Buckets of at most 256 KiB go in one round to every peer ("one-shot", engine/dist/p2p.py).
Each phase (reduce-scatter, all-gather, push, pull) lasts as long as its busiest worker: the
larger of its bytes over its link (each direction) and its bytes sent plus received over the
transport's CPU ceiling; phases follow one another. A round costs the one-way latency between
two workers plus the transport's fixed per-round cost; a connection idle through the compute
restarts TCP slow start, and bf16/fp16 cost one encode/decode round trip of the gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.plan.costs import Costs
from engine.plan.inputs import Mac, Workload

ONE_SHOT_BYTES = 256 * 1024  # engine/dist/p2p.py ONE_SHOT_BYTES
ONE_SHOT_MAX_RANKS = 8
WIRE_BYTES = {"none": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class SyncCost:
    seconds: float
    bytes_per_worker: float  # sent by the busiest worker
    rounds: int
    note: str = ""


def _rate(mac: Mac, ceiling: float) -> float:
    return min(mac.bandwidth_bytes_s, ceiling)


def _one_way(macs: list[Mac]) -> float:
    """One-way latency of a message between the two farthest workers: half of each one's
    round trip to the switch (a crossing of both links)."""
    worst = sorted(m.rtt_s for m in macs)[-2:]
    return sum(worst) / 2 if len(worst) == 2 else 0.0


def _slow_start(macs: list[Mac], ceiling: float, costs: Costs) -> float:
    """A connection idle through a step's compute restarts from TCP's initial window: the
    first transfer needs log2(BDP / initial window) extra round trips to reach the link rate."""
    worst = 0.0
    for m in macs:
        bdp = _rate(m, ceiling) * m.rtt_s
        if bdp > costs.initial_window_bytes:
            worst = max(worst, m.rtt_s * math.log2(bdp / costs.initial_window_bytes))
    return worst


def sync_time(mode: str, codec: str, macs: list[Mac], work: Workload, costs: Costs) -> SyncCost:
    """Seconds one step spends synchronising gradients (and parameters) in ``mode``.

    A step is a sequence of phases; in each, worker i sends s_i and receives r_i bytes, and
    the phase takes the longest of max(s_i, r_i) / link_i (the wire, full duplex) and
    (s_i + r_i) / ceiling (the transport's CPU) over the workers."""
    n = len(macs)
    if n == 1:
        return SyncCost(0.0, 0.0, 0)
    w = WIRE_BYTES[codec]
    s = work.grad_params
    mlx = mode == "mlx"
    ceiling = costs.mlx_bytes_s if mlx else costs.grpc_bytes_s
    round_s = _one_way(macs) + (costs.mlx_round_s if mlx else costs.grpc_round_s)
    share = (n - 1) / n
    fp32_bytes = 4.0 * s
    buckets = max(1, math.ceil(fp32_bytes / work.bucket_bytes))
    bucket_values = s / buckets
    small_rounds = 0 if codec == "none" else 1  # loss and token count: an exact all-gather
    # each worker encodes and decodes about the whole gradient once (its shards out, the
    # peers' in); Costs.codec_bytes_s is that round trip's rate
    codec_s = 0.0 if codec == "none" else fp32_bytes / _codec_rate(codec, macs, costs)
    if mode in ("all-reduce", "ring", "mlx"):
        one_shot = bucket_values * w <= ONE_SHOT_BYTES and (
            mode == "all-reduce" or n <= ONE_SHOT_MAX_RANKS
        )
        if one_shot and not mlx:  # every rank sends its whole bucket to every peer
            each = (n - 1) * bucket_values * w
            rounds = buckets
        else:  # reduce-scatter then all-gather, each moving (N-1)/N of the bucket
            each = 2 * share * bucket_values * w
            rounds = buckets * (2 if mode == "all-reduce" else 2 * (n - 1))
        phases = [[(buckets * each, buckets * each)] * n]
    elif mode == "reduce-scatter":  # gradient shards, then fp32 parameters
        phases = [[(share * s * w,) * 2] * n, [(share * fp32_bytes,) * 2] * n]
        rounds, small_rounds = 3, 0  # its small all-gather is one of the 3 rounds
    elif mode == "parameter-server":  # push gradients to rank 0, then pull parameters
        up, down = s * w, fp32_bytes
        phases = [[(0.0, (n - 1) * up)] + [(up, 0.0)] * (n - 1),
                  [((n - 1) * down, 0.0)] + [(0.0, down)] * (n - 1)]  # fmt: skip
        rounds = 2
    else:
        raise ValueError(f"dist.mode: no communication model for {mode!r}")
    seconds = sum(
        max(
            max(max(sent, got) / m.bandwidth_bytes_s, (sent + got) / ceiling)
            for m, (sent, got) in zip(macs, phase, strict=True)
        )
        for phase in phases
    )
    seconds += (rounds + small_rounds) * round_s + codec_s + _slow_start(macs, ceiling, costs)
    sent_most = max(sum(phase[i][0] for phase in phases) for i in range(n))
    return SyncCost(seconds, sent_most, rounds + small_rounds)


def _codec_rate(codec: str, macs: list[Mac], costs: Costs) -> float:
    if all(m.apple for m in macs):
        return 10 * costs.codec_bytes_s["bf16"]  # native conversion on Apple silicon
    return costs.codec_bytes_s[codec]


def update_time(mode: str, n: int, work: Workload, costs: Costs) -> float:
    """AdamW on the master vector: every worker updates all of it, except ZeRO-1 (1/N)."""
    values = work.grad_params / n if mode == "reduce-scatter" and n > 1 else work.grad_params
    return values * costs.update_s_per_param
