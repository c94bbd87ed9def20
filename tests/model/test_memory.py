"""estimate_memory against the measured peak of a real LoRA training step (MLX on this machine)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from engine.config import JobSpec
from engine.data import collate
from engine.lora import apply_lora
from engine.model import estimate_memory, inspect_model, load_model
from engine.train import GradientStep, Updater, cast_for_compute

from .conftest import build, save_folder, tiny_config


def measure_peak(job: JobSpec, workers: int = 1) -> int:
    """Peak bytes of load + LoRA + one of Orchard's own steps (every micro-batch of one
    worker's share, forward/backward, the flat fp32 masters and the device AdamW update)."""
    mx.clear_cache()
    mx.reset_peak_memory()
    model = load_model(job.model).model
    apply_lora(model, job.lora, seed=0)
    updater = Updater(model, job, 1)
    cast_for_compute(model, job.run.precision)
    micro = job.run.batch_size // workers // job.run.grad_accum
    rng = np.random.default_rng(0)
    batches = [
        collate([(rng.integers(0, 512, job.data.max_seq_len + 1).astype(np.int32),
                  np.ones(job.data.max_seq_len + 1, np.uint8)) for _ in range(micro)], 0)
        for _ in range(job.run.grad_accum)
    ]  # fmt: skip
    loss, ntok, grads = GradientStep(model)(batches, updater.loss_scale_value)
    upd = updater.apply_update(grads, ntok, 0)
    del grads  # as the trainer does: the flat gradient holds them until it is built
    mx.eval(updater.arrays(), loss, ntok, upd.grad_norm, upd.ok)
    return mx.get_peak_memory()


CASES = {
    "auto": ["run.batch_size=2", "data.max_seq_len=128"],
    "bf16": ["run.batch_size=2", "data.max_seq_len=128", "run.precision='bf16'"],
    "fp32": ["run.batch_size=2", "data.max_seq_len=128", "run.precision='fp32'"],
    "qlora": ["run.batch_size=2", "data.max_seq_len=128", "model.quantize=true", "model.group_size=32"],
    "long": ["run.batch_size=1", "data.max_seq_len=384"],
    "accum+workers": ["run.batch_size=8", "run.grad_accum=2", "data.max_seq_len=64"],
    "all-modules": ["run.batch_size=2", "data.max_seq_len=64", "lora.rank=32",
                    "lora.target_modules=['q_proj','k_proj','v_proj','o_proj','gate_proj','up_proj','down_proj']"],
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_estimate_is_within_2x_of_a_real_step(case):
    job = JobSpec().with_overrides(CASES[case])
    workers = 2 if case == "accum+workers" else 1
    estimate = estimate_memory(inspect_model("resources/models/stories260K"), job, workers)
    measured = measure_peak(job, workers)
    ratio = measured / estimate.total_bytes
    print(f"memory {case}: measured/estimated = {ratio:.2f} ({measured} / {estimate.total_bytes})")
    assert 0.5 < ratio < 2.0
    assert sum(estimate.breakdown.values()) == estimate.total_bytes


def test_weights_and_optimizer_dominated(tmp_path):
    """A wider model, short sequences, a large rank and every bias trained."""
    config = tiny_config(
        hidden_size=256, intermediate_size=512, num_hidden_layers=2, vocab_size=2048
    )
    folder = save_folder(build(config), config, tmp_path / "wide")
    job = JobSpec().with_overrides(
        [f"model.path='{folder}'", "run.batch_size=1", "data.max_seq_len=16", "lora.rank=64",
         "lora.bias='all'", "lora.target_modules=['q_proj','k_proj','v_proj','o_proj','gate_proj','up_proj','down_proj']"]
    )  # fmt: skip
    estimate = estimate_memory(inspect_model(folder), job)
    assert estimate.breakdown["activations"] < estimate.breakdown["base_weights"]
    assert estimate.breakdown["optimizer_state"] == 8 * estimate.trainable_params
    measured = measure_peak(job)
    ratio = measured / estimate.total_bytes
    print(f"memory weights-dominated: measured/estimated = {ratio:.2f}")
    assert 0.5 < ratio < 2.0


def test_estimate_responds_to_the_job():
    info = inspect_model("resources/models/stories260K")
    base = JobSpec()
    one = estimate_memory(info, base, workers=1)
    two = estimate_memory(info, base, workers=2)
    assert two.micro_batch == one.micro_batch // 2
    assert two.breakdown["activations"] < one.breakdown["activations"]
    assert two.breakdown["base_weights"] == one.breakdown["base_weights"]
    q = estimate_memory(info, base.with_overrides(["model.quantize=true", "model.group_size=32"]))
    assert q.breakdown["base_weights"] < one.breakdown["base_weights"] / 2
    wide = estimate_memory(info, base.with_overrides(["lora.rank=16"]))
    assert wide.trainable_params == 2 * one.trainable_params
    # rank 8 on q,k,v,o of five layers: 8 * (in + out) each, from the model's real shapes
    assert one.trainable_params == 5 * 8 * ((64 + 64) + (64 + 32) + (64 + 32) + (64 + 64))


def test_format_text_shows_the_breakdown_and_assumptions():
    text = estimate_memory(inspect_model("demo"), JobSpec(), workers=2).format_text()
    assert "activations" in text and "optimizer_state" in text
    assert "micro-batch of 4 sequences x 512 tokens" in text


def test_auto_precision_follows_a_bf16_base(tmp_path):
    """The default (auto) computes a bf16 base in bf16: the estimate counts 2-byte activations
    and base weights, and a real step's peak agrees."""
    config = tiny_config(hidden_size=128, intermediate_size=256, num_hidden_layers=2)
    model = build(config)
    model.set_dtype(mx.bfloat16)
    folder = save_folder(model, config, tmp_path / "bf16")
    job = JobSpec().with_overrides(
        [f"model.path='{folder}'", "run.batch_size=2", "data.max_seq_len=128"]
    )
    info = inspect_model(folder)
    auto = estimate_memory(info, job)
    fp32 = estimate_memory(info, job.with_overrides(["run.precision='fp32'"]))
    assert auto.breakdown["base_weights"] * 2 == fp32.breakdown["base_weights"]
    assert auto.breakdown["activations"] < fp32.breakdown["activations"]
    measured = measure_peak(job)
    ratio = measured / auto.total_bytes
    print(f"memory bf16 base, auto: measured/estimated = {ratio:.2f}")
    assert 0.5 < ratio < 2.0
