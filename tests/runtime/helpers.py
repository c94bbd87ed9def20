"""Shared pieces of the runtime tests: a tiny job, the single-process reference, readers."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from engine.config import JobSpec
from engine.train.metrics import read_metrics


def tiny_job(out_dir: Path, steps: int = 30, **over: object) -> JobSpec:
    """stories260K on the demo dataset, seq <= 64, a batch that splits unevenly over 2 and 3."""
    sets = [
        f"run.steps={steps}", "run.batch_size=5", "data.max_seq_len=64", "run.val_every=0",
        "run.checkpoint_every=0", f'run.out_dir="{out_dir}"', "optim.learning_rate=0.01",
        "optim.warmup_steps=3", "lora.rank=4",
        'dist.mode="all-reduce"',  # a fixed mode (auto probes first: tests/plan covers it)
    ]  # fmt: skip
    sets += [f"{k}={_toml(v)}" for k, v in over.items()]
    return JobSpec().with_overrides([s.replace("'", '"') for s in sets])


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, str) else str(v)


def reference_run(job: JobSpec, run_dir: Path) -> Path:
    """One process, engine.train's own loop, on the same global batches."""
    from engine.data import BatchSampler, collate, prepare_data
    from engine.lora.apply import apply_lora
    from engine.model.load import load_model
    from engine.train import train

    loaded = load_model(job.model)
    apply_lora(loaded.model, job.lora, seed=job.run.seed)
    data = prepare_data(job.data, loaded.tokenizer, seed=job.run.seed)
    sampler = BatchSampler(data.train.lengths(), job.run.batch_size, seed=job.run.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    train(
        job,
        loaded.model,
        data.train,
        data.valid,
        sampler,
        run_dir,
        collate=collate,
        pad_id=data.pad_id,
    )
    return run_dir


def train_losses(run_dir: Path) -> np.ndarray:
    rows = [
        r
        for r in read_metrics(Path(run_dir) / "metrics.jsonl")
        if r.get("kind", "train") == "train"
    ]
    return np.array([r["train_loss"] for r in sorted(rows, key=lambda r: r["step"])])


def adapter_weights(run_dir: Path) -> dict[str, np.ndarray]:
    return {
        k: np.array(v)
        for k, v in mx.load(str(Path(run_dir) / "adapter" / "adapters.safetensors")).items()
    }
