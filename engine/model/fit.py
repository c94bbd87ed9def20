"""Does a job fit a model? Checked from ModelInfo alone (config + safetensors headers), before
anything loads, so a bad choice is named while nothing has started.

Errors: a model type mlx-lm cannot run, LoRA targets or layers the model does not have, and a
QLoRA group size that does not divide the input width of a chosen target (MLX quantizes
groups along the input; such a module would silently stay in full precision). Warnings:
QLoRA settings a stored-quantized model ignores, DoRA on a quantized base (it keeps a
dequantized copy of each adapted weight for the backward pass).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import JobSpec
from engine.model.inspect import ModelInfo, match_targets


@dataclass(frozen=True)
class FitProblem:
    level: str  # "error" (the run cannot start) | "warning"
    field: str  # the job setting at fault, e.g. "model.group_size"
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def check_fit(info: ModelInfo, job: JobSpec) -> list[FitProblem]:
    """Every problem of ``job`` on the model ``info`` describes, errors first."""
    out: list[FitProblem] = []
    if not info.supported:
        out.append(FitProblem("error", "model.path", f"{info.path}: model_type "
                              f"{info.model_type!r} is not supported by mlx-lm"))  # fmt: skip
    available = info.module_names
    matches = match_targets(available, job.lora.target_modules)
    for target, hits in matches.items():
        if not hits:
            out.append(FitProblem("error", "lora.target_modules", f"{target!r} is not a linear "
                                  f"module of this model; choose from: {', '.join(available)}"))  # fmt: skip
    bad_layers = [i for i in job.lora.layers if i >= info.num_layers]
    if bad_layers:
        out.append(FitProblem("error", "lora.layers", f"{bad_layers} out of range; this model "
                              f"has layers 0..{info.num_layers - 1}"))  # fmt: skip
    chosen = {n for hits in matches.values() for n in hits}
    targets = [m for m in info.linear_modules if m.name in chosen]
    q = info.quantization
    if job.model.quantize and not q:
        group = job.model.group_size
        for m in targets:
            if m.in_features % group:
                fits = [g for g in (32, 64, 128) if m.in_features % g == 0]
                fix = f"a group size that divides it ({', '.join(map(str, fits))})" if fits else (
                    "no QLoRA group size divides it")  # fmt: skip
                out.append(FitProblem("error", "model.group_size", f"{group} does not divide "
                    f"the input width {m.in_features} of {m.name}, a LoRA target: QLoRA cannot "
                    f"quantize it. Choose {fix}, or leave {m.name} out of lora.target_modules"))  # fmt: skip
    if job.model.quantize and q:
        stored = (q.get("bits"), q.get("group_size"))
        if stored != (job.model.bits, job.model.group_size):
            out.append(FitProblem("warning", "model.quantize", f"the model is stored quantized "
                f"({stored[0]}-bit, group {stored[1]}); model.bits={job.model.bits} and "
                f"model.group_size={job.model.group_size} are ignored"))  # fmt: skip
    if job.lora.type == "dora" and (q or job.model.quantize):
        out.append(FitProblem("warning", "lora.type", "DoRA on a quantized base keeps a "
            "dequantized copy of each adapted weight for the backward pass (see the memory "
            "estimate's dora line)"))  # fmt: skip
    return sorted(out, key=lambda p: p.level != "error")
