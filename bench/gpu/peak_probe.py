"""Where a LoRA step's peak memory goes: Orchard's step against mlx-lm's, phase by phase.

Each variant runs in a fresh process on the same model, data and LoRA settings as
bench/lora_vs_mlx_lm.py and prints one line

    variant=<name> setup_gib=<active after load + LoRA + optimizer> step1_gib=<peak of the
    first (compiling) step> steady_gib=<highest peak of the later steps>

Variants:
  mlx_lm        mlx-lm's own compiled step (forward, backward and AdamW in one mx.compile),
                LoRA weights in fp32 as mlx-lm makes them
  mlx_lm_bf16   the same with the LoRA weights cast to the base's dtype (what Orchard's
                run.precision=auto computes in): the two graphs then differ only in the
                optimizer path
  orchard       Orchard's step exactly as engine.train.train runs it (GradientStep, then
                Updater.apply_update, one mx.eval)
  orchard_f32lora  Orchard's step with the LoRA weights left in fp32 (views of the masters)
                over the bf16 base: mlx-lm's model graph with Orchard's optimizer path
  orchard_split Orchard's step with the loss and gradients evaluated before the update is
                built (two evals: tells whether the one-eval order costs memory)
  <name>_q2     any of these with MLX_MAX_OPS_PER_BUFFER=2 (see SMALL_QUEUE); default list
                adds mlx_lm_bf16_q2 and orchard_q2

The last line is ``orchard_over_mlx_lm_bf16=<x> orchard_over_mlx_lm=<y>``, ratios of steady
peaks: x between the same model graphs, y what bench/lora_vs_mlx_lm.py compares.
Peaks are mx.get_peak_memory after mx.reset_peak_memory, so they include whatever the
backend keeps alive for work in flight (on a GPU, buffers of queued kernels).

    python bench/gpu/peak_probe.py --model DIR [--rank 8 --targets attention --batch 8
                                                --seq 512 --steps 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

VARIANTS = ("mlx_lm", "mlx_lm_bf16", "orchard", "orchard_f32lora", "orchard_split")
# the same, with at most 2 kernels per GPU command buffer (MLX_MAX_OPS_PER_BUFFER): on a GPU
# the buffers a queued command uses stay alive until it completes, so a smaller queue shows
# how much of a peak is work in flight rather than the step's own arrays
SMALL_QUEUE = "_q2"
GIB = 2**30


def _mlx_lm_steps(args, chunks, bf16: bool):
    from functools import partial

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from lora_vs_mlx_lm import TARGETS
    from mlx.utils import tree_map
    from mlx_lm import load as mlx_lm_load
    from mlx_lm.tuner.trainer import default_loss, iterate_batches
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from engine.config import resolve_model_path

    model, _ = mlx_lm_load(resolve_model_path(args.model))
    model.freeze()
    config = {"rank": args.rank, "scale": 2.0, "dropout": 0.0, "keys": TARGETS[args.targets]}
    linear_to_lora_layers(model, len(model.layers), config)
    if bf16:
        dtype = model.layers[0].self_attn.q_proj.linear.weight.dtype
        model.update(tree_map(lambda a: a.astype(dtype), model.trainable_parameters()))
    optimizer = optim.AdamW(learning_rate=1e-4, weight_decay=0.0)
    loss_value_and_grad = nn.value_and_grad(model, default_loss)
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(batch):  # mlx_lm.tuner.trainer.train's step, one micro-batch a step
        (lvalue, toks), grad = loss_value_and_grad(model, *batch)
        optimizer.update(model, grad)
        return lvalue, toks

    model.train()
    mx.eval(model.parameters())
    dataset = [(c.tolist(), 0) for c in chunks]
    batches = iterate_batches(dataset, args.batch, args.seq + 1, loop=True)

    def run_step():
        lvalue, toks = step(next(batches))
        mx.eval(state, lvalue, toks)

    return run_step


def _orchard_steps(args, chunks, split: bool, f32lora: bool):
    import mlx.core as mx
    import numpy as np
    from lora_vs_mlx_lm import orchard_setup

    from engine.data import BatchSampler
    from engine.data import collate as data_collate
    from engine.train.step import GradientStep
    from engine.train.update import Updater, cast_for_compute

    job, model = orchard_setup(args)
    updater = Updater(model, job, args.steps)
    cast_for_compute(model, job.run.precision)
    if f32lora:
        updater.dtype = mx.float32
        updater._put_in_model()
    grad_step = GradientStep(model)
    items = [(c, np.ones(len(c), np.uint8)) for c in chunks]
    sampler = BatchSampler([len(c) for c in items], args.batch, seed=0)
    model.train()
    counter = iter(range(10**9))

    def run_step():  # engine.train.trainer.train's step
        i = next(counter)
        parts = sampler.micro_batches(i, 0, 1, 1)
        batches = [data_collate([items[j] for j in idx], 0) for idx in parts]
        loss_sum, ntok, grads = grad_step(batches, updater.loss_scale_value)
        if split:
            mx.eval(loss_sum, ntok, grads)
        upd = updater.apply_update(grads, ntok, i)
        del grads
        mx.eval(updater.arrays(), mx.random.state, loss_sum, ntok, upd.grad_norm, upd.ok)

    return run_step


def run_variant(args, name: str) -> None:
    import gc

    import mlx.core as mx
    from lora_vs_mlx_lm import token_chunks
    from mlx_lm import load as mlx_lm_load

    from engine.config import resolve_model_path

    _, tokenizer = mlx_lm_load(resolve_model_path(args.model))
    del _
    chunks = token_chunks(tokenizer, args.seq)
    gc.collect()
    mx.clear_cache()
    base = mx.get_active_memory()
    if name.startswith("mlx_lm"):
        run_step = _mlx_lm_steps(args, chunks, bf16=name == "mlx_lm_bf16")
    else:
        run_step = _orchard_steps(
            args, chunks, split=name == "orchard_split", f32lora=name == "orchard_f32lora"
        )
    setup = mx.get_active_memory() - base
    peaks = []
    for _ in range(args.steps):
        mx.reset_peak_memory()
        run_step()
        peaks.append(mx.get_peak_memory() - base)
    print(f"variant={name} setup_gib={setup / GIB:.3f} step1_gib={peaks[0] / GIB:.3f} "
          f"steady_gib={max(peaks[1:]) / GIB:.3f}", flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--targets", choices=("attention", "all"), default="attention")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--precision", default="auto", help="Orchard's run.precision")
    default = [*VARIANTS, "mlx_lm_bf16" + SMALL_QUEUE, "orchard" + SMALL_QUEUE]
    p.add_argument("--variants", default=",".join(default))
    p.add_argument("--only", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.steps < 2:
        p.error("--steps: at least 2 (the first compiles)")
    if args.only:
        return run_variant(args, args.only)
    steady = {}
    for name in args.variants.split(","):
        base, env = name.removesuffix(SMALL_QUEUE), dict(os.environ)
        if base not in VARIANTS:
            p.error(
                f"--variants: unknown {name!r}; expected {', '.join(VARIANTS)} (+{SMALL_QUEUE})"
            )
        if base != name:
            env["MLX_MAX_OPS_PER_BUFFER"] = "2"
        proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", base],
                              capture_output=True, text=True, check=False, env=env)  # fmt: skip
        line = [x for x in proc.stdout.splitlines() if x.startswith("variant=")]
        if proc.returncode or not line:
            sys.exit(f"{name} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
        print(line[-1].replace(f"variant={base} ", f"variant={name} "), flush=True)
        steady[name] = float(line[-1].rsplit("steady_gib=", 1)[1])
    if {"orchard", "mlx_lm", "mlx_lm_bf16"} <= set(steady):
        print(f"orchard_over_mlx_lm_bf16={steady['orchard'] / steady['mlx_lm_bf16']:.3f} "
              f"orchard_over_mlx_lm={steady['orchard'] / steady['mlx_lm']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
