"""Where a training step's time goes, Orchard's against mlx-lm's, phase by phase, in CPU time.

Same model, batch and LoRA settings as bench/lora_vs_mlx_lm.py (fixed-length chunks of the
demo dataset, no padding). For each step, in turn on the same batch:

- Orchard's trainer step (engine/train: GradientStep, then Updater.apply_update, one eval);
- the same split in two evals: ``grads`` (forward and backward, compiled) then ``update``
  (flatten, global norm, FlatAdamW, the model's views);
- the worker's step (engine.dist.DistributedAdamW with one worker, as `orchard train` runs);
- mlx-lm's compiled step (value_and_grad and optimizer.update in one graph, as
  mlx_lm.tuner.trainer), and its forward and backward alone;

in a shuffled order each step (the one before must not bias the one after).

Each is timed in CPU seconds of this process (getrusage), which a shared machine's load
barely moves, unlike wall time: run it with ``OPENBLAS_NUM_THREADS=1`` so CPU time is work
(spinning BLAS threads would count too). Medians over the steps after ``--skip``.
The last line is ``step_cpu_ratio=<orchard/mlx_lm> grads_cpu_ratio=<...> update_ms=<o>/<m>``.

    OPENBLAS_NUM_THREADS=1 python bench/step_phases.py --model DIR --rank 64 --targets all
"""

from __future__ import annotations

import argparse
import resource
import sys
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlx_lm import load as mlx_lm_load  # noqa: E402
from mlx_lm.tuner.trainer import default_loss  # noqa: E402
from mlx_lm.tuner.utils import linear_to_lora_layers  # noqa: E402

from bench.lora_vs_mlx_lm import TARGETS, orchard_setup, token_chunks, with_worker_blas  # noqa: E402
from engine.config import resolve_model_path  # noqa: E402
from engine.data import collate  # noqa: E402
from engine.dist.dist_optimizer import DistributedAdamW  # noqa: E402
from engine.dist.factory import make_group  # noqa: E402
from engine.train.step import GradientStep  # noqa: E402
from engine.train.update import Updater, cast_for_compute  # noqa: E402


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def orchard_trainer(args):
    job, model = orchard_setup(args)
    updater = Updater(model, job, 1000)  # masters before the cast, as engine.train.train
    cast_for_compute(model, job.run.precision)
    model.train()
    return model, GradientStep(model), updater


def orchard_worker(args):
    job, model = orchard_setup(args)
    group = make_group("all-reduce", 0, ["self"], "", None)
    opt = DistributedAdamW(group, "all-reduce", job.optim, model.trainable_parameters())
    cast_for_compute(model, job.run.precision)
    model.update(opt.layout.unflatten(opt.params))
    mx.eval(model.parameters())
    model.train()
    return model, GradientStep(model), opt


def mlx_lm_steps(args):
    model, _ = mlx_lm_load(resolve_model_path(args.model))
    model.freeze()
    config = {"rank": args.rank, "scale": 2.0, "dropout": 0.0, "keys": TARGETS[args.targets]}
    linear_to_lora_layers(model, len(model.layers), config)
    opt = optim.AdamW(learning_rate=1e-4, weight_decay=0.0)
    value_and_grad = nn.value_and_grad(model, default_loss)
    state = [model.state, opt.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(batch, lengths):  # mlx_lm.tuner.trainer's step, without accumulation
        (loss, toks), grad = value_and_grad(model, batch, lengths)
        opt.update(model, grad)
        return loss, toks

    grad_state = [model.state, mx.random.state]

    @partial(mx.compile, inputs=grad_state, outputs=grad_state)
    def grads(batch, lengths):
        (loss, toks), grad = value_and_grad(model, batch, lengths)
        return loss, toks, grad

    model.train()
    return step, grads, state


def main() -> None:
    with_worker_blas()  # the BLAS a worker gets (bench/lora_vs_mlx_lm.py)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo", help="model folder (default: stories260K)")
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--targets", choices=sorted(TARGETS), default="all")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--skip", type=int, default=2, help="first steps left out (they compile)")
    p.add_argument("--precision", default="auto", help="Orchard's run.precision")
    args = p.parse_args()
    if args.steps <= args.skip:
        p.error("--steps must be more than --skip")
    tokenizer = mlx_lm_load(resolve_model_path(args.model))[1]
    chunks = token_chunks(tokenizer, args.seq)
    tmodel, tgrad, updater = orchard_trainer(args)
    _, wgrad, wopt = orchard_worker(args)
    mstep, mgrads, mstate = mlx_lm_steps(args)
    n = sum(v.size for _, v in tree_flatten(tmodel.parameters()))
    print(f"model {args.model}: {n / 1e6:.1f}M parameters, rank {args.rank} on {args.targets}, "
          f"{updater.layout.total / 1e6:.2f}M trainable; batch {args.batch} x {args.seq}")  # fmt: skip
    rng = np.random.default_rng(0)
    t: dict[str, list[float]] = {}

    def timed(name, fn, *fn_args):
        c0 = cpu_s()
        out = fn(*fn_args)
        t.setdefault(name, []).append(cpu_s() - c0)
        return out

    def trainer_step(batch, s):
        loss, ntok, grads = tgrad(batch, 1.0)
        upd = updater.apply_update(grads, ntok, s)
        del grads
        mx.eval(updater.arrays(), mx.random.state, loss, ntok, upd.grad_norm, upd.ok)

    def split_grads(batch):
        out = tgrad(batch, 1.0)
        mx.eval(out)
        return out

    def split_update(out, s):
        loss, ntok, grads = out
        upd = updater.apply_update(grads, ntok, s)
        mx.eval(updater.arrays(), upd.grad_norm, upd.ok)

    def worker_step(batch):
        loss, ntok, grads = wgrad(batch, 1.0)
        wopt.step(grads, loss, ntok, 1e-4)

    def orchard_split(batch, s):
        out = timed("orchard grads", split_grads, batch)
        timed("orchard update", split_update, out, s)

    variants = [
        lambda batch, arr, lengths, s: timed("orchard step", trainer_step, batch, s),
        lambda batch, arr, lengths, s: orchard_split(batch, s),
        lambda batch, arr, lengths, s: timed("worker step", worker_step, batch),
        lambda batch, arr, lengths, s: timed(
            "mlx_lm step", lambda: mx.eval(mstate, mstep(arr, lengths))
        ),
        lambda batch, arr, lengths, s: timed("mlx_lm grads", lambda: mx.eval(mgrads(arr, lengths))),
    ]
    for s in range(args.steps):
        idx = rng.choice(len(chunks), args.batch, replace=False)
        items = [(chunks[i], np.ones(len(chunks[i]), np.uint8)) for i in idx]
        batch = [timed("orchard data", collate, items, 0)]
        arr = mx.array(np.stack([chunks[i] for i in idx]))
        lengths = mx.array([[0, args.seq + 1]] * args.batch)
        for v in rng.permutation(len(variants)):  # no variant always runs after another
            variants[v](batch, arr, lengths, s)
        print(f"step {s}: " + " ".join(f"{k.replace(' ', '_')}={v[-1]:.3f}" for k, v in t.items()),
              flush=True)  # fmt: skip
    med = {k: float(np.median(v[args.skip :])) for k, v in t.items()}
    med["mlx_lm update"] = med["mlx_lm step"] - med["mlx_lm grads"]
    for k, v in med.items():
        print(f"{k:15s} {v * 1000:9.1f} ms CPU (median)")
    print(
        f"step_cpu_ratio={med['orchard step'] / med['mlx_lm step']:.4f} "
        f"grads_cpu_ratio={med['orchard grads'] / med['mlx_lm grads']:.4f} "
        f"update_ms={med['orchard update'] * 1000:.1f}/{med['mlx_lm update'] * 1000:.1f}"
    )


if __name__ == "__main__":
    main()
