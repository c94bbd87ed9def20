"""LoRA on chosen modules and layers (mlx-lm's LoRALinear), bias modes, adapters, fuse."""

from engine.lora.adapters import load_adapter, read_adapter_config, save_adapter
from engine.lora.apply import LoraError, LoraReport, apply_lora, layer_linear_names, lora_report
from engine.lora.fuse import fuse_adapter, fuse_lora_layers

__all__ = [
    "LoraError",
    "LoraReport",
    "apply_lora",
    "fuse_adapter",
    "fuse_lora_layers",
    "layer_linear_names",
    "load_adapter",
    "lora_report",
    "read_adapter_config",
    "save_adapter",
]
