"""QLoRA: quantize the frozen base with mlx's nn.quantize, skipping what cannot be quantized.

mx.quantize needs a module's input dimension to be a multiple of the group size; a module
that is not (stories260K's down_proj, width 172) stays in full precision and the report
says so, instead of the run crashing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

log = logging.getLogger(__name__)

QUANTIZED_TYPES = (nn.QuantizedLinear, nn.QuantizedEmbedding)


@dataclass
class QuantReport:
    bits: int
    group_size: int
    source: str  # "orchard" (quantized at load) or "checkpoint" (stored quantized)
    quantized: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # module path -> why it stayed float
    bytes_before: int = 0
    bytes_after: int = 0

    def summary(self) -> str:
        text = f"{len(self.quantized)} modules at {self.bits} bits (group {self.group_size})"
        if self.skipped:
            text += f"; {len(self.skipped)} kept in full precision"
        return text


def model_bytes(model: nn.Module) -> int:
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


def quantize_model(model: nn.Module, bits: int, group_size: int) -> QuantReport:
    """Quantize in place every module that supports it and whose input dim fits group_size."""
    report = QuantReport(bits=bits, group_size=group_size, source="orchard")
    report.bytes_before = model_bytes(model)

    def predicate(path: str, module: nn.Module) -> bool:
        if isinstance(module, QUANTIZED_TYPES) or not hasattr(module, "to_quantized"):
            return False
        in_dim = module.weight.shape[-1]
        if in_dim % group_size != 0:
            report.skipped[path] = (
                f"input dimension {in_dim} is not divisible by group size {group_size}"
            )
            return False
        report.quantized.append(path)
        return True

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=predicate)
    mx.eval(model.parameters())
    report.bytes_after = model_bytes(model)
    for path, why in report.skipped.items():
        log.info("QLoRA: %s stays in full precision: %s", path, why)
    log.info("QLoRA: %s", report.summary())
    return report


def checkpoint_quant_report(model: nn.Module, quantization: dict[str, Any]) -> QuantReport:
    """Describe a model that mlx-lm loaded already quantized (config "quantization")."""
    report = QuantReport(
        bits=int(quantization.get("bits", 4)),
        group_size=int(quantization.get("group_size", 64)),
        source="checkpoint",
    )
    for path, module in model.named_modules():
        if isinstance(module, QUANTIZED_TYPES):
            report.quantized.append(path)
        elif isinstance(module, (nn.Linear, nn.Embedding)):
            report.skipped[path] = "stored in full precision in the checkpoint"
    report.bytes_before = report.bytes_after = model_bytes(model)
    return report
