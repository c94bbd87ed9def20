"""The single-process training loop: a free function whose collaborators are parameters.

Data comes in through ``sampler`` (a pure function of the step, so a resume needs only the
step), ``collate`` and the datasets; metrics leave through ``sink`` and metrics.jsonl; a
``threading.Event`` stops the run at the next step boundary with a checkpoint.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import mlx.core as mx
import mlx.nn as nn

from engine.config import JobSpec
from engine.data import collate as data_collate
from engine.data import eval_batches
from engine.events import EventSink, LogEvent, MetricEvent, StateEvent
from engine.train.checkpoint import load_latest_checkpoint, save_checkpoint
from engine.train.metrics import MetricsLog, Progress
from engine.train.step import Evaluator, GradientStep, LossFn, token_loss_sum
from engine.train.update import Updater, cast_for_compute

log = logging.getLogger(__name__)


class Sampler(Protocol):
    def micro_batches(self, step: int, rank: int, world: int, accum: int) -> list[list[int]]: ...


Collate = Callable[[Sequence[Any], int], Any]


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # updates done
    total_steps: int
    stopped: bool
    train_loss: float | None
    val_loss: float | None
    skipped_steps: int


def total_steps_for(job: JobSpec, n_train: int) -> int:
    """``run.steps``, or enough steps for ``run.epochs`` passes over ``n_train`` items."""
    if job.run.epochs > 0:
        return max(1, math.ceil(job.run.epochs * n_train / job.run.batch_size))
    return job.run.steps


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The dropout seed for a step: a pure function, so a resume needs no RNG state."""
    return (seed * 1_000_003 + step) * 1_009 + rank


def validation_sums(
    evaluator: Evaluator,
    valid_set: Sequence[Any],
    batch_size: int,
    max_batches: int,
    collate: Collate,
    pad_id: int,
    rank: int = 0,
    world: int = 1,
) -> tuple[float, float]:
    """Token-sum loss and token count over the first ``max_batches`` (0 = all) batches of
    the validation set in length order (least padding); this rank takes every
    ``world``-th batch, so ranks all-reduce the two sums."""
    lengths = [len(valid_set[i][0]) for i in range(len(valid_set))]
    batches = eval_batches(lengths, batch_size)
    if max_batches > 0:
        batches = batches[:max_batches]
    total, ntok = mx.array(0.0), mx.array(0.0)
    for idx in batches[rank::world]:
        loss, count = evaluator(collate([valid_set[i] for i in idx], pad_id))
        total, ntok = total + loss, ntok + count
    mx.eval(total, ntok)
    return total.item(), ntok.item()


def train(
    job: JobSpec,
    model: nn.Module,
    train_set: Sequence[Any],
    valid_set: Sequence[Any] | None,
    sampler: Sampler,
    run_dir: str | Path,
    sink: EventSink | None = None,
    stop_event: threading.Event | None = None,
    *,
    collate: Collate | None = None,
    pad_id: int = 0,
    resume: bool = False,
    loss_fn: LossFn = token_loss_sum,
) -> TrainResult:
    """Train ``model``'s trainable parameters for the job's steps; returns how it ended.

    With ``resume`` the newest verified checkpoint in ``run_dir`` restores weights,
    optimizer, loss scale, RNG and step, and the run continues the same curve.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    collate = collate or data_collate
    stop_event = stop_event or threading.Event()
    emit = sink or (lambda _e: None)
    r = job.run
    total = total_steps_for(job, len(train_set))
    updater = Updater(model, job, total)  # masters from the fp32 weights, before casting
    cast_for_compute(model, r.precision)
    start = 0
    if resume:
        shapes = {k: tuple(v.shape) for k, v in updater.state_arrays().items()}
        ckpt = load_latest_checkpoint(run_dir, shapes)
        updater.load_state_arrays(ckpt.arrays)
        if updater.loss_scale is not None and ckpt.meta.get("loss_scale"):
            updater.loss_scale.load_state_dict(ckpt.meta["loss_scale"])
        start = ckpt.step
        log.info("resuming from %s at step %d", ckpt.path, start)
        emit(LogEvent("info", f"resumed from {ckpt.path.name} at step {start}"))
    grad_step = GradientStep(model, loss_fn)
    evaluator = Evaluator(model, loss_fn)
    metrics = MetricsLog(run_dir, sink, resume_step=start if resume else None)
    progress = Progress(start, total)

    def checkpoint(step: int) -> None:
        meta = {
            "seed": r.seed,
            "rng": "mx.random.seed(step_seed(seed, step, rank)) before each step",
            "total_steps": total,
            "precision": r.precision,
            "loss_scale": updater.loss_scale.state_dict() if updater.loss_scale else None,
        }
        path = save_checkpoint(
            run_dir, step, updater.state_arrays(), meta, job.to_toml(), r.keep_checkpoints
        )
        log.info("checkpoint %s", path)
        emit(
            StateEvent(
                "checkpointed", f"step {step}", str(run_dir), {"step": step, "path": str(path)}
            )
        )

    def validate(step: int) -> float | None:
        if not valid_set:
            return None
        model.eval()
        loss_sum, ntok = validation_sums(
            evaluator, valid_set, r.batch_size, r.val_batches, collate, pad_id
        )
        model.train()
        if ntok == 0:
            return None
        val = loss_sum / ntok
        metrics.emit(MetricEvent(step=step, values={"val_loss": val}, kind="val"))
        log.info("step %d: val_loss %.4f", step, val)
        return val

    emit(StateEvent("running", f"{total - start} steps to go", str(run_dir), {"start_step": start}))
    model.train()
    train_loss = val_loss = None
    step, saved_at, stopped = start, start if resume else -1, False
    try:
        for i in range(start, total):
            if stop_event.is_set():
                stopped = True
                break
            t0 = time.perf_counter()
            mx.random.seed(step_seed(r.seed, i))
            parts = sampler.micro_batches(i, 0, 1, r.grad_accum)
            batches = [collate([train_set[j] for j in idx], pad_id) for idx in parts]
            loss_sum, ntok, grads = grad_step(batches, updater.loss_scale_value)
            upd = updater.apply_update(grads, ntok, i)
            del grads  # the flat gradient holds them until it is built; then they are freed
            mx.eval(updater.arrays(), mx.random.state, loss_sum, ntok, upd.grad_norm, upd.ok)
            dt = time.perf_counter() - t0
            step = i + 1
            n = ntok.item()
            train_loss = loss_sum.item() / max(n, 1.0)
            values = {
                "train_loss": train_loss,
                "learning_rate": upd.learning_rate,
                "tokens": n,
                "tokens_per_s": n / dt,
                "step_time_s": dt,
                "peak_memory_gb": mx.get_peak_memory() / 1e9,
                "grad_norm": upd.grad_norm.item(),
            }
            if updater.loss_scale is not None:
                values["loss_scale"] = updater.loss_scale.scale
            if upd.skipped:
                values["skipped"] = 1.0
                emit(
                    LogEvent(
                        "warning",
                        f"step {step}: update skipped (fp16 overflow or no target tokens)",
                    )
                )
            metrics.emit(MetricEvent(step=step, values=values))
            emit(progress.event(step))
            if r.val_every and (step % r.val_every == 0 or step == total):
                val_loss = validate(step)
            if (r.checkpoint_every and step % r.checkpoint_every == 0) or step == total:
                checkpoint(step)
                saved_at = step
        if stopped and step != saved_at:
            checkpoint(step)
    finally:
        metrics.close()
    skipped = updater.loss_scale.state.skipped_steps if updater.loss_scale else 0
    return TrainResult(run_dir, step, total, stopped, train_loss, val_loss, skipped)
