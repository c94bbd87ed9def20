"""The planner's price of a step's compute (engine/plan/inputs.py lora_flops_per_token):
matmuls weighted by the model's width, plus attention's score passes. The constants are
fitted on real steps by bench/compute_rate.py; these tests pin the shape of the model."""

from __future__ import annotations

import math

import pytest

from engine.plan import lora_flops_per_token
from engine.plan.inputs import REFERENCE_HIDDEN, SCORE_FLOPS


def test_score_passes_grow_with_heads_and_sequence_length():
    base = lora_flops_per_token(10**6, 4, 256, 512, heads=2)
    assert lora_flops_per_token(10**6, 4, 256, 512, heads=32) - base == pytest.approx(
        SCORE_FLOPS * 4 * 30 * 512
    )
    # per token the scores grow with the width; the matmuls' own attention term does too
    assert lora_flops_per_token(10**6, 4, 256, 1024, 8) > lora_flops_per_token(
        10**6, 4, 256, 512, 8
    )


def test_narrow_models_pay_more_per_matmul_flop_and_the_gain_stops_at_twice_the_reference():
    def matmul_only(hidden: int) -> float:
        return lora_flops_per_token(10**8, 1, hidden, 0.0, heads=0)

    assert matmul_only(REFERENCE_HIDDEN) == pytest.approx(4e8)
    assert matmul_only(REFERENCE_HIDDEN // 4) == pytest.approx(2 * 4e8)  # sqrt(4)
    assert matmul_only(2 * REFERENCE_HIDDEN) == pytest.approx(4e8 / math.sqrt(2))
    assert matmul_only(8 * REFERENCE_HIDDEN) == matmul_only(2 * REFERENCE_HIDDEN)


def test_the_demo_model_is_priced_mostly_by_its_attention_scores():
    """stories260K (hidden 64, 8 heads of 8) at the demo's widths: its steps are dominated by
    the score tensor, which the earlier matmul-only price missed by 4-5x."""
    from engine.config import DEMO_MODEL, resolve_model_path
    from engine.model.inspect import inspect_model

    info = inspect_model(resolve_model_path(DEMO_MODEL))
    matmul = info.param_count
    seq = 500.0
    full = lora_flops_per_token(matmul, info.num_layers, info.hidden_size, seq, info.num_heads)
    without_scores = lora_flops_per_token(matmul, info.num_layers, info.hidden_size, seq, 0)
    assert full > 3 * without_scores
