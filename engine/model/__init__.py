"""Models through mlx-lm: load, inspect without weights, estimate memory, check a job fits,
QLoRA quantization, gradient checkpointing; the Hugging Face cache and Hub (cache, hub, download)."""

from engine.model.errors import ModelError
from engine.model.fit import FitProblem, check_fit
from engine.model.inspect import LinearModule, ModelInfo, inspect_model, match_targets
from engine.model.load import LoadedModel, load_model, load_tokenizer, resolve_model_dir
from engine.model.memory import MemoryEstimate, estimate_memory
from engine.model.quantize import QuantReport, quantize_model

__all__ = [
    "FitProblem",
    "LinearModule",
    "LoadedModel",
    "MemoryEstimate",
    "ModelError",
    "ModelInfo",
    "QuantReport",
    "check_fit",
    "estimate_memory",
    "inspect_model",
    "load_model",
    "load_tokenizer",
    "match_targets",
    "quantize_model",
    "resolve_model_dir",
]
