"""Calibrate the planner's compute model against real training steps on this machine.

The planner turns a probe's fp32 matmul rate into a training rate with
Costs.train_efficiency. This runs real LoRA steps (engine.train's compiled GradientStep) of
an in-memory llama (random weights, hidden 512, 8 layers, seq 256, batch 4, rank 8
attention-only) and the probe's own matmul benchmark in the same process, with the OpenBLAS
preload the workers get, interleaved, and prints the ratio of the best of each.

Last line: train_efficiency=<x> matmul_gflops=<g> step_s=<s>
Run: python bench/compute_rate.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HIDDEN, LAYERS, INTER, VOCAB, SEQ, BATCH = 512, 8, 1536, 8192, 256, 4


def measure() -> None:
    import mlx.core as mx
    import numpy as np
    from mlx_lm.models import llama

    from engine.config import JobSpec
    from engine.data import collate
    from engine.lora.apply import apply_lora
    from engine.plan import lora_flops_per_token
    from engine.train.step import GradientStep
    from engine.worker.probe import matmul_gflops

    args = llama.ModelArgs(
        model_type="llama", hidden_size=HIDDEN, num_hidden_layers=LAYERS, intermediate_size=INTER,
        num_attention_heads=8, num_key_value_heads=4, rms_norm_eps=1e-5, vocab_size=VOCAB,
    )  # fmt: skip
    model = llama.Model(args)
    mx.eval(model.parameters())
    apply_lora(model, JobSpec().lora, seed=0)
    rng = np.random.default_rng(0)
    items = [(rng.integers(0, VOCAB, SEQ + 1).astype(np.int32), np.ones(SEQ + 1, np.uint8))
             for _ in range(BATCH)]  # fmt: skip
    batch = collate(items, 0)
    step = GradientStep(model)
    for _ in range(2):  # compile
        mx.eval(step([batch]))
    # interleaved, best of each: on a shared machine the load drifts, and the least
    # disturbed step and benchmark are the closest to what each can do
    times, rates = [], []
    for _ in range(6):
        t0 = time.perf_counter()
        mx.eval(step([batch]))
        times.append(time.perf_counter() - t0)
        rates.append(matmul_gflops(0.3))
    step_s, gflops = min(times), max(rates)
    per_layer = 2 * HIDDEN * HIDDEN + 2 * HIDDEN * (HIDDEN // 2) + 3 * HIDDEN * INTER
    matmul_params = LAYERS * per_layer + VOCAB * HIDDEN  # the output projection
    fpt = lora_flops_per_token(matmul_params, LAYERS, HIDDEN, SEQ)
    eff = BATCH * SEQ * fpt / step_s / (gflops * 1e9)
    print(f"train_efficiency={eff:.3f} matmul_gflops={gflops:.1f} step_s={step_s:.3f}")


def main() -> int:
    if os.environ.get("ORCHARD_COMPUTE_CHILD"):
        measure()
        return 0
    from engine.worker.blas import worker_env

    env = {**worker_env(os.environ), "ORCHARD_COMPUTE_CHILD": "1"}  # as a worker runs
    return subprocess.run([sys.executable, __file__], env=env, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
