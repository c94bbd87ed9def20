"""Tiny in-memory models and synthetic token data for the trainer tests."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models import llama

from engine.config import JobSpec
from engine.data import BatchSampler, collate  # noqa: F401 (re-exported for the tests)
from engine.lora.apply import apply_lora


def tiny_model(seed: int = 0, vocab: int = 64):
    mx.random.seed(seed)
    args = llama.ModelArgs(
        model_type="llama", hidden_size=32, num_hidden_layers=2, intermediate_size=48,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=vocab,
    )  # fmt: skip
    model = llama.Model(args)
    mx.eval(model.parameters())
    return model


def tiny_lora_model(job: JobSpec, seed: int = 0):
    model = tiny_model(seed)
    apply_lora(model, job.lora, seed=job.run.seed)
    return model


def synthetic_items(n: int, length: int = 17, vocab: int = 64, seed: int = 0):
    """Token sequences with a learnable pattern (each token predicts the next)."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        start = int(rng.integers(0, vocab))
        step = int(rng.integers(1, 4))
        tokens = ((start + step * np.arange(length)) % vocab).astype(np.int32)
        weights = np.ones(length, np.uint8)
        weights[: int(rng.integers(1, 4))] = 0  # a masked "prompt"
        items.append((tokens, weights))
    return items


@pytest.fixture
def job(tmp_path):
    job = JobSpec()
    job.lora.rank = 4
    job.lora.dropout = 0.1
    job.lora.target_modules = ["q_proj", "v_proj"]
    job.optim.learning_rate = 1e-2
    job.optim.warmup_steps = 2
    job.run.steps = 8
    job.run.batch_size = 4
    job.run.grad_accum = 2
    job.run.val_every = 4
    job.run.val_batches = 2
    job.run.checkpoint_every = 3
    job.run.keep_checkpoints = 2
    job.run.out_dir = str(tmp_path)
    job.run.name = "t"
    return job
