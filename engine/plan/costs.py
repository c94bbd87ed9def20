"""The constants the planner's model needs besides the probes, each with where it comes from.

Everything here is a rate or a fixed cost of Orchard's own software, measured, so a plan can
be checked against a run (bench/links.py prints plan against measurement).
"""

from __future__ import annotations

from dataclasses import dataclass, field

GB = 1e9


@dataclass(frozen=True)
class Costs:
    # The gRPC data plane's ceiling: bytes a worker process sends plus receives per second,
    # whatever the link (serialising, copying and summing in Python threads cost CPU in both
    # directions). Issue 12: 184 MB all-reduced by 2 processes on an idle 16-core box in
    # 0.215 s, each sending and receiving 184 MB: 2 x 184 / 0.215 = 1.7 GB/s (~0.9 GB/s of
    # all-reduce bandwidth).
    grpc_bytes_s: float = 1.7 * GB
    # mx.distributed's ring (C++, TCP) on the same box: 184 MB in 0.19 s -> 1.9 GB/s.
    mlx_bytes_s: float = 1.9 * GB
    # Fixed cost of one collective round on top of the network's one-way latency: a 64 KiB
    # gRPC message crosses ~4 Python threads, ~0.5-0.8 ms (engine/dist/README.md); MLX ~0.1 ms.
    grpc_round_s: float = 0.6e-3
    mlx_round_s: float = 0.1e-3
    # Encoding fp32 to bf16/fp16 and decoding it again, bytes of fp32 per second
    # (engine/dist/README.md: bf16 ~1 GB/s on 2 x86 cores, fp16 ~0.33 GB/s there; Apple
    # silicon converts natively).
    codec_bytes_s: dict[str, float] = field(
        default_factory=lambda: {"none": float("inf"), "bf16": 1.0 * GB, "fp16": 0.33 * GB}
    )
    # AdamW on the flat fp32 master vector, seconds per parameter (numpy <-> mx copies and
    # the update; ~4 ns/param measured on this 2-core box with bench/links.py --calibrate)
    update_s_per_param: float = 4e-9
    # The share of the probe's fp32 matmul rate a LoRA training step of a model 1024 wide
    # reaches on the work lora_flops_per_token counts (wider models reach more, narrower
    # less: engine/plan/inputs.py): bench/compute_rate.py fits it with inputs.SCORE_FLOPS over
    # real steps of 9 model shapes against the probe's benchmark in one process: 0.66 on this
    # project's 2-core Linux VM with OpenBLAS. Measured steps correct it per Mac during a run
    # (engine/plan/live.py).
    train_efficiency: float = 0.66
    # Each micro-batch of gradient accumulation costs a fixed dispatch on top of its FLOPs
    # (one compiled call and its evaluation).
    micro_batch_s: float = 2e-3
    # A gain below this share does not justify lossy wire compression: auto keeps exact
    # fp32 gradients unless bf16/fp16 is at least this much faster.
    compression_min_gain: float = 0.05
    # TCP's initial window (10 segments); a connection idle longer than its RTO restarts
    # from it, so each step's first transfer pays a few round trips of slow start.
    initial_window_bytes: float = 10 * 1448
