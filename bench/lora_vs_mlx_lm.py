"""Orchard's LoRA trainer against mlx-lm's own, same model, data and settings, one process.

Both train a model (``--model``: a folder in mlx-lm/HF format, e.g. one made by
scripts/make_random_model.py; default the bundled stories260K) on the same fixed-length
token chunks of the demo dataset (no padding on either side) with the same rank, targets
(``--targets attention``: q/k/v/o; ``all``: every linear layer of each block), batch,
sequence length and steps. Orchard runs with its default ``run.precision`` (``auto``: the
base's own dtype) unless ``--precision`` says otherwise; mlx-lm as it loads the model.

Throughput: the two trainers run in lockstep, each in its own thread, handing a baton to
the other every ``--every`` steps (at their own metric reports, after the step's eval), so
only one computes at a time and both see the same machine load at a fine grain: this box
is shared and its speed swings 2-3x within a minute. Each segment is timed from taking the
baton to the next report (batching, step, metrics all in); the first (compiling) segment
is dropped. ``--rounds`` lockstep runs; the ratio is of the summed tokens over summed time.
Also printed: tokens per CPU second of the process over the same segments (load barely
moves it; run with OPENBLAS_NUM_THREADS=1 for it to measure work alone).
Both run with the BLAS Orchard's workers get (engine/worker/blas.py: on Linux the system
OpenBLAS, preloaded; the mlx wheel's reference BLAS is ~9x slower): the bench starts itself
again with it when it is not loaded.
Peak memory: a separate run of 6 steps of each, in a fresh process of its own
(mx.get_peak_memory).
The last line is ``tokens_per_s_ratio=<orchard/mlx_lm> peak_memory_ratio=<orchard/mlx_lm>``.

    python bench/lora_vs_mlx_lm.py [--model DIR --rank 64 --targets all --steps 60 --every 2
                                    --rounds 2 --batch 8 --seq 128]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlx_lm import load as mlx_lm_load  # noqa: E402
from mlx_lm.tuner.callbacks import TrainingCallback  # noqa: E402
from mlx_lm.tuner.trainer import TrainingArgs, iterate_batches  # noqa: E402
from mlx_lm.tuner.trainer import train as mlx_lm_train  # noqa: E402
from mlx_lm.tuner.utils import linear_to_lora_layers  # noqa: E402

from engine.config import JobSpec, resolve_data_path, resolve_model_path  # noqa: E402
from engine.data import BatchSampler  # noqa: E402
from engine.events import MetricEvent  # noqa: E402
from engine.lora import apply_lora  # noqa: E402
from engine.model import load_model  # noqa: E402
from engine.train import train as orchard_train  # noqa: E402

MEMORY_STEPS = 6
TARGETS = {
    "attention": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"],
    "all": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"],
}  # fmt: skip


def token_chunks(tokenizer, seq: int) -> list[np.ndarray]:
    """The demo dataset's texts as one token stream cut into ``seq + 1``-token items."""
    rows = [json.loads(line) for line in Path(resolve_data_path("demo")).read_text().splitlines()]
    stream: list[int] = []
    for r in rows:
        stream += tokenizer.encode(f"{r['instruction']} {r['output']}") + [tokenizer.eos_token_id]
    n = len(stream) // (seq + 1)
    return [np.array(stream[i * (seq + 1) : (i + 1) * (seq + 1)], np.int32) for i in range(n)]


def _reset_memory() -> None:
    gc.collect()  # the previous run's model and graphs must not count
    mx.clear_cache()
    mx.reset_peak_memory()


class Baton:
    """Lets one trainer compute at a time and records each one's timed segments."""

    def __init__(self, every: int):
        self.every = every
        self.turn = "orchard"
        self.done: set[str] = set()
        self.cv = threading.Condition()
        self.start: dict[str, tuple[float, float]] = {}
        # (step, wall seconds, CPU seconds of the process) of each segment
        self.segments: dict[str, list[tuple[int, float, float]]] = {"orchard": [], "mlx_lm": []}

    def take(self, me: str) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.turn == me or (self.done - {me}))
        self.start[me] = (time.perf_counter(), time.process_time())

    def report(self, me: str, step: int) -> None:
        if step % self.every:
            return
        wall, cpu = self.start[me]
        self.segments[me].append((step, time.perf_counter() - wall, time.process_time() - cpu))
        self.give(me)
        self.take(me)

    def give(self, me: str, finished: bool = False) -> None:
        with self.cv:
            if finished:
                self.done.add(me)
            self.turn = "mlx_lm" if me == "orchard" else "orchard"
            self.cv.notify_all()


def orchard_setup(args):
    job = JobSpec()
    job.model.path = args.model
    job.lora.rank, job.lora.alpha = args.rank, 2.0 * args.rank
    job.lora.target_modules = TARGETS[args.targets]
    job.optim.learning_rate, job.optim.schedule, job.optim.grad_clip = 1e-4, "constant", 0.0
    job.optim.weight_decay = 0.0
    job.run.steps, job.run.batch_size = args.steps, args.batch
    job.run.val_every, job.run.checkpoint_every = 0, 0
    job.run.precision = args.precision
    loaded = load_model(job.model)
    apply_lora(loaded.model, job.lora, seed=0)
    return job, loaded.model


def run_orchard(args, chunks, on_step) -> None:
    job, model = orchard_setup(args)
    items = [(c, np.ones(len(c), np.uint8)) for c in chunks]
    sampler = BatchSampler([len(c) for c in chunks], args.batch, seed=0)

    def sink(e):
        if isinstance(e, MetricEvent) and e.kind == "train":
            on_step(e.step)

    with tempfile.TemporaryDirectory() as d:
        orchard_train(job, model, items, None, sampler, d, sink, threading.Event())


class _Reports(TrainingCallback):
    def __init__(self, on_step):
        self.on_step = on_step

    def on_train_loss_report(self, info):
        self.on_step(info["iteration"])


def run_mlx_lm(args, chunks, on_step) -> None:
    model, _ = mlx_lm_load(resolve_model_path(args.model))
    model.freeze()
    config = {"rank": args.rank, "scale": 2.0, "dropout": 0.0, "keys": TARGETS[args.targets]}
    linear_to_lora_layers(model, len(model.layers), config)
    dataset = [(c.tolist(), 0) for c in chunks]
    with tempfile.TemporaryDirectory() as d:
        targs = TrainingArgs(
            batch_size=args.batch, iters=args.steps, val_batches=0, steps_per_report=args.every,
            steps_per_eval=10**9, steps_per_save=10**9, max_seq_length=args.seq + 1,
            adapter_file=str(Path(d) / "adapters.safetensors"),
        )  # fmt: skip
        mlx_lm_train(
            model, optim.AdamW(learning_rate=1e-4, weight_decay=0.0), dataset, None, targs,
            iterate_batches=iterate_batches, training_callback=_Reports(on_step),
        )  # fmt: skip


RUNNERS = {"orchard": run_orchard, "mlx_lm": run_mlx_lm}


def lockstep(args, chunks) -> dict[str, list[tuple[int, float, float]]]:
    baton = Baton(args.every)
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            baton.take(name)
            RUNNERS[name](args, chunks, lambda step: baton.report(name, step))
        except BaseException as e:  # surface it in the main thread
            errors.append(e)
        finally:
            baton.give(name, finished=True)

    threads = [threading.Thread(target=worker, args=(n,)) for n in RUNNERS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return baton.segments


def peak_memory(args, chunks, name: str) -> int:
    """Peak bytes of one trainer's run, in a fresh process of its own: what one run leaves
    behind (allocator caches, kernels, handles) must not count against the other."""
    argv = [a for a in sys.argv[1:] if a != "--memory-only"]
    proc = subprocess.run(
        [sys.executable, __file__, *argv, "--peak-of", name],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = [line for line in proc.stdout.splitlines() if line.startswith("PEAK ")]
    if proc.returncode != 0 or not found:
        sys.exit(f"{name}: the memory run failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return int(found[-1].split()[1])


def _peak_of(args, chunks, name: str) -> None:
    args.steps = min(args.steps, MEMORY_STEPS)  # the peak comes in the first steps
    _reset_memory()
    RUNNERS[name](args, chunks, lambda step: None)
    print(f"PEAK {mx.get_peak_memory()}", flush=True)


def with_worker_blas() -> None:
    """Start this script again with the BLAS a local worker gets (engine/worker/blas.py),
    unless it is loaded already or none is found: both trainers then use it."""
    import os

    from engine.worker.blas import openblas_loaded, worker_env

    env = worker_env(os.environ)
    if env.get("LD_PRELOAD") != os.environ.get("LD_PRELOAD") and not openblas_loaded():
        os.execve(sys.executable, [sys.executable, *sys.argv], env)  # the script run


def main() -> None:
    with_worker_blas()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--every", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--targets", choices=sorted(TARGETS), default="attention")
    p.add_argument("--model", default="demo", help="model folder (default: stories260K)")
    p.add_argument("--precision", default="auto", help="Orchard's run.precision")
    p.add_argument("--memory-only", action="store_true", help="skip the throughput runs")
    p.add_argument("--peak-of", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.steps % args.every or args.steps < 2 * args.every:
        p.error("--steps must be a multiple of --every, at least twice it")
    logging.basicConfig(level=logging.WARNING)
    # the tokenizer only: a model kept here would sit in both peaks below
    tokenizer = mlx_lm_load(resolve_model_path(args.model))[1]
    chunks = token_chunks(tokenizer, args.seq)
    if args.peak_of:
        return _peak_of(args, chunks, args.peak_of)
    print(f"{len(chunks)} items of {args.seq + 1} tokens, batch {args.batch}, rank {args.rank}, "
          f"targets {args.targets}, model {args.model}")  # fmt: skip
    if args.memory_only:
        mem = {name: peak_memory(args, chunks, name) for name in ("mlx_lm", "orchard")}
        print(f"peak memory: orchard {mem['orchard'] / 2**20:.2f} MiB, "
              f"mlx_lm {mem['mlx_lm'] / 2**20:.2f} MiB")  # fmt: skip
        print(f"peak_memory_ratio={mem['orchard'] / mem['mlx_lm']:.3f}")
        return
    per_segment = args.every * args.batch * args.seq
    tokens = {"orchard": 0, "mlx_lm": 0}
    seconds = {"orchard": 0.0, "mlx_lm": 0.0}
    cpu = {"orchard": 0.0, "mlx_lm": 0.0}
    for r in range(args.rounds):
        segments = lockstep(args, chunks)
        rate = {}
        for name, segs in segments.items():
            timed = [(t, c) for step, t, c in segs if step > args.every]  # drop the compiling one
            tokens[name] += per_segment * len(timed)
            seconds[name] += sum(t for t, _ in timed)
            cpu[name] += sum(c for _, c in timed)
            rate[name] = per_segment * len(timed) / sum(t for t, _ in timed)
            rates = " ".join(f"{per_segment / t:.0f}" for t, _ in timed)
            print(f"round {r + 1} {name:8s} tokens/s per segment: {rates}")
        print(f"round {r + 1} ratio {rate['orchard'] / rate['mlx_lm']:.3f}", flush=True)
    tps = {k: tokens[k] / seconds[k] for k in tokens}
    print(f"tokens/s: orchard {tps['orchard']:.0f}, mlx_lm {tps['mlx_lm']:.0f}")
    # tokens per CPU second of the process (both trainers' threads, BLAS's included): what a
    # shared machine's load barely moves; equal to tokens/s on an idle machine with one BLAS
    # thread (more threads count their spinning too)
    cps = {k: tokens[k] / cpu[k] for k in tokens}
    print(f"tokens per CPU second: orchard {cps['orchard']:.0f}, mlx_lm {cps['mlx_lm']:.0f}: "
          f"cpu_tokens_ratio={cps['orchard'] / cps['mlx_lm']:.3f}")  # fmt: skip
    mem = {name: peak_memory(args, chunks, name) for name in ("mlx_lm", "orchard")}
    print(
        f"peak memory: orchard {mem['orchard'] / 2**20:.2f} MiB, mlx_lm {mem['mlx_lm'] / 2**20:.2f} MiB"
    )
    print(
        f"tokens_per_s_ratio={tps['orchard'] / tps['mlx_lm']:.3f} "
        f"peak_memory_ratio={mem['orchard'] / mem['mlx_lm']:.3f}"
    )


if __name__ == "__main__":
    main()
