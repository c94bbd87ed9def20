"""Calibrate the planner's compute model against real training steps on this machine.

The planner prices a step as tokens x lora_flops_per_token / (probe's matmul rate x
Costs.train_efficiency), where lora_flops_per_token counts the matmuls, weighted by the
model's width, and attention's score passes (engine/plan/inputs.py). This runs real LoRA
steps (engine.train's compiled GradientStep, rank 8 on all linear layers: the job default)
of in-memory llamas with random weights over shapes that move one term at a time (hidden
64-2048, 2-32 heads, seq 128-1024; the first is the bundled demo model's shape) and the
probe's own matmul benchmark in the same process, with the OpenBLAS preload the workers get.
It prints each shape's step against the plan with the constants in the code, then the two
constants fitted to these steps (least squares on relative error).

Last line: train_efficiency=<fit> score_flops=<fit> plan_over_measured=<lo>..<hi>
  (plan_over_measured: the code's constants, over all shapes; 1.0 is exact, above 1 the
  plan is too slow, below it too fast)
Run: python bench/compute_rate.py          (about 2 minutes on a 2-core VM)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# hidden, layers, intermediate, heads, kv heads, vocab, seq, batch
SHAPES = [
    (64, 5, 172, 8, 4, 512, 256, 8),  # stories260K, the demo model
    (64, 5, 172, 8, 4, 512, 1024, 2),
    (512, 4, 1536, 8, 4, 8192, 128, 16),
    (512, 4, 1536, 8, 4, 8192, 512, 4),
    (512, 4, 1536, 8, 4, 8192, 1024, 2),
    (256, 4, 768, 2, 2, 4096, 512, 4),
    (256, 4, 768, 32, 32, 4096, 512, 4),
    (1024, 4, 2816, 16, 8, 8192, 512, 2),
    (2048, 2, 8192, 16, 8, 8192, 256, 2),
]


def step_seconds(shape: tuple[int, ...]) -> float:
    """The best of 3 timed steps after 2 compiling ones."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm.models import llama

    from engine.config import JobSpec
    from engine.data import collate
    from engine.lora.apply import apply_lora
    from engine.train.step import GradientStep

    hidden, layers, inter, heads, kv, vocab, seq, batch = shape
    args = llama.ModelArgs(
        model_type="llama", hidden_size=hidden, num_hidden_layers=layers,
        intermediate_size=inter, num_attention_heads=heads, num_key_value_heads=kv,
        rms_norm_eps=1e-5, vocab_size=vocab,
    )  # fmt: skip
    model = llama.Model(args)
    mx.eval(model.parameters())
    apply_lora(model, JobSpec().lora, seed=0)
    rng = np.random.default_rng(0)
    items = [(rng.integers(0, vocab, seq + 1).astype(np.int32), np.ones(seq + 1, np.uint8))
             for _ in range(batch)]  # fmt: skip
    step = GradientStep(model)
    data = collate(items, 0)
    for _ in range(2):
        mx.eval(step([data]))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        mx.eval(step([data]))
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_params(shape: tuple[int, ...]) -> int:
    """The parameters a token's matmuls go through: q, k, v, o, the MLP, the output layer."""
    hidden, layers, inter, heads, kv, vocab, _seq, _batch = shape
    per_layer = 2 * hidden * hidden + 2 * hidden * kv * (hidden // heads) + 3 * hidden * inter
    return layers * per_layer + vocab * hidden


def terms(shape: tuple[int, ...]) -> tuple[float, float]:
    """(width-weighted matmul FLOPs, score count) of one step: the two terms
    lora_flops_per_token weighs (its first term without SCORE_FLOPS' part)."""
    from engine.plan import lora_flops_per_token

    hidden, layers, _inter, heads, _kv, _vocab, seq, batch = shape
    matmul = lora_flops_per_token(matmul_params(shape), layers, hidden, seq, heads=0)
    return batch * seq * matmul, float(batch * seq * layers * heads * seq)


def measure() -> None:
    import numpy as np

    from engine.plan import Costs, lora_flops_per_token
    from engine.plan.inputs import SCORE_FLOPS
    from engine.worker.probe import matmul_gflops

    rate = max(matmul_gflops(0.3) for _ in range(3)) * 1e9
    eff = Costs().train_efficiency
    print(f"probe matmul rate {rate / 1e9:.1f} GFLOP/s; constants in the code: "
          f"train_efficiency={eff} SCORE_FLOPS={SCORE_FLOPS:g}")  # fmt: skip
    rows, ratios = [], []
    for shape in SHAPES:
        measured = step_seconds(shape)
        hidden, layers, _inter, heads, _kv, _vocab, seq, batch = shape
        matmul, scores = terms(shape)
        fpt = lora_flops_per_token(matmul_params(shape), layers, hidden, seq, heads)
        planned = batch * seq * fpt / (rate * eff)  # what the planner says
        ratios.append(planned / measured)
        rows.append((matmul, scores, measured))
        print(f"hidden {hidden:4d} layers {layers} heads {heads:2d} seq {seq:4d} batch {batch:2d}: "
              f"step {measured:.3f} s, plan {planned:.3f} s, plan/measured {planned / measured:.2f}",
              flush=True)  # fmt: skip
    # measured ~= (matmul + c * scores) / (rate * e): fit 1/e and c/e on relative error
    a = np.array([[m / rate / t, s / rate / t] for m, s, t in rows])
    (inv_e, c_over_e), *_ = np.linalg.lstsq(a, np.ones(len(rows)), rcond=None)
    fit_e, fit_c = 1 / inv_e, c_over_e / inv_e
    print(f"train_efficiency={fit_e:.3f} score_flops={fit_c:.0f} "
          f"plan_over_measured={min(ratios):.2f}..{max(ratios):.2f}")  # fmt: skip


def main() -> int:
    if os.environ.get("ORCHARD_COMPUTE_CHILD"):
        measure()
        return 0
    from engine.worker.blas import worker_env

    env = {**worker_env(os.environ), "ORCHARD_COMPUTE_CHILD": "1"}  # as a worker runs
    return subprocess.run([sys.executable, __file__], env=env, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
