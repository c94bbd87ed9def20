"""Measure the memory of one real training step, to hold estimate_memory to account.

The step is the library trainer's own (engine.train: the compiled GradientStep over the
worker's micro-batches, then the Updater's AdamW on fp32 masters), on full-length random
sequences, with LoRA/DoRA and gradient checkpointing as the job asks. The peak counts from
after the model, adapters and optimizer are built (a load that quantizes passes through the
float weights first; that is loading, not training), over two steps: the first compiles.

Run in a fresh process so the peak and MLX's cache are this job's alone:
    python -m engine.model.memory_probe MODEL_FOLDER [section.key=value ...]
prints one JSON line with the measured peak, the estimate and the ratio.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace
from typing import Any

from engine.config import JobSpec
from engine.no_torch import keep_torch_out


def measure_step_peak(job: JobSpec, workers: int = 1, steps: int = 2) -> dict[str, Any]:
    """Peak bytes of ``steps`` real training steps of ``job`` (one worker's share)."""
    import mlx.core as mx

    from engine.lora import apply_lora
    from engine.model.grad_checkpoint import enable_grad_checkpoint
    from engine.model.load import load_model
    from engine.model.memory import micro_batch_size
    from engine.train import GradientStep, Updater, cast_for_compute

    loaded = load_model(job.model)
    model = loaded.model
    apply_lora(model, job.lora, seed=job.run.seed)
    if job.run.grad_checkpoint:
        enable_grad_checkpoint(model)
    updater = Updater(model, job, total_steps=max(steps, 2))
    cast_for_compute(model, job.run.precision)
    mx.eval(model.parameters())
    step = GradientStep(model)
    micro = micro_batch_size(job, workers)
    vocab = int(loaded.config.get("vocab_size") or 512)
    shape = (micro, job.data.max_seq_len)
    batches = []
    for i in range(job.run.grad_accum):
        x = mx.random.randint(0, vocab, shape, key=mx.random.key(i))
        batches.append(SimpleNamespace(inputs=x, targets=mx.roll(x, -1, 1), weights=mx.ones(shape)))
    mx.eval([b.inputs for b in batches])
    mx.clear_cache()
    mx.reset_peak_memory()
    resident = mx.get_active_memory()
    for i in range(steps):
        loss, ntok, grads = step(batches)
        result = updater.apply_update(grads, ntok, i)
        mx.eval(loss, model.trainable_parameters(), result)
    return {"peak_bytes": int(mx.get_peak_memory()), "resident_bytes": int(resident),
            "loss": float(loss.item()), "micro_batch": micro}  # fmt: skip


def compare(folder: str, overrides: list[str], workers: int = 1) -> dict[str, Any]:
    """Estimate and measured peak of one job on one model folder."""
    from engine.model.inspect import inspect_model
    from engine.model.memory import estimate_memory, runs_on_cuda

    job = JobSpec().with_overrides([f'model.path="{folder}"', *overrides])
    estimate = estimate_memory(inspect_model(folder), job, workers, cuda=runs_on_cuda())
    measured = measure_step_peak(job, workers)
    return {
        **measured,
        "estimate_bytes": estimate.total_bytes,
        "breakdown": estimate.breakdown,
        "ratio": estimate.total_bytes / measured["peak_bytes"],  # estimate / measured
    }


def main(argv: list[str] | None = None) -> int:
    keep_torch_out()  # as in a worker (engine/no_torch.py)
    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.stderr.write(__doc__ or "")
        return 2
    sys.stdout.write(json.dumps(compare(args[0], args[1:])) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
