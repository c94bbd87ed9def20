"""Export a trained adapter: as it is (mlx-lm), as a Hugging Face PEFT adapter, or fused.

Everything works from the adapter folder on disk (mlx-lm's format, with Orchard's extras),
so an adapter that mlx-lm wrote exports the same way as one Orchard wrote. Fusing itself is
engine.lora.fuse_adapter (mlx-lm's LoRALinear.fuse); this package adds PEFT and the CLI.
"""

from engine.export.adapter import AdapterFiles, ExportError, LoraPair, read_adapter
from engine.export.peft_export import export_peft, peft_config, peft_state_dict

__all__ = [
    "AdapterFiles",
    "ExportError",
    "LoraPair",
    "export_peft",
    "peft_config",
    "peft_state_dict",
    "read_adapter",
]
