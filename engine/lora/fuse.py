"""Fuse an adapter into its base model with mlx-lm's LoRALinear.fuse, as `mlx_lm.fuse` does.

The result is a plain model folder mlx_lm.load opens. Unlike `mlx_lm.fuse` it also carries
Orchard's trained biases and re-applies QLoRA quantization of the base before fusing, so the
fused model is the model that was trained.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import mlx.nn as nn
from mlx.utils import tree_unflatten
from mlx_lm.utils import dequantize_model, save

from engine.config import ModelSpec
from engine.lora.adapters import load_adapter, read_adapter_config
from engine.lora.apply import ADAPTER_TYPES
from engine.model.load import load_model

log = logging.getLogger(__name__)


def fuse_lora_layers(model: nn.Module, dequantize: bool = False) -> int:
    """Replace every LoRALinear/DoRALinear by its fused linear, in place; returns how many."""
    fused = [(n, m.fuse(dequantize=dequantize)) for n, m in model.named_modules() if isinstance(m, ADAPTER_TYPES)]  # fmt: skip
    if fused:
        model.update_modules(tree_unflatten(fused))
    return len(fused)


def fuse_adapter(
    adapter_dir: str | Path,
    out_dir: str | Path,
    base_path: str | None = None,
    dequantize: bool = False,
) -> Path:
    """Load base + adapter, fuse, save to out_dir; base_path defaults to the adapter's "model".

    A quantized base stays quantized unless dequantize=True (re-quantizing W + BA loses a
    little; dequantize=True keeps the trained model exactly).
    """
    config = read_adapter_config(adapter_dir)
    orchard = config.get("orchard") or {}
    quant = orchard.get("quantize")
    spec = ModelSpec(path=base_path or config["model"], quantize=quant is not None)
    if quant:
        spec.bits, spec.group_size = int(quant["bits"]), int(quant["group_size"])
    loaded = load_model(spec)
    load_adapter(loaded.model, adapter_dir)
    model = loaded.model
    n = fuse_lora_layers(model, dequantize=dequantize)
    model_config = copy.deepcopy(loaded.config)
    if dequantize:
        model = dequantize_model(model)
        model_config.pop("quantization", None)
        model_config.pop("quantization_config", None)
    elif loaded.quant_report is not None and "quantization" not in model_config:
        # quantized by Orchard at load time: tell mlx-lm how to rebuild the layers
        q = loaded.quant_report
        model_config["quantization"] = {
            "group_size": q.group_size,
            "bits": q.bits,
            "mode": "affine",
        }
    out = Path(out_dir)
    save(out, loaded.path, model, loaded.tokenizer, model_config, donate_model=False)
    log.info("fused %d LoRA modules into %s", n, out)
    return out
