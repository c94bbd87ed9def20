"""Hugging Face PEFT export: the same LoRA update under PEFT's names, shapes and scaling.

mlx-lm computes ``y = W x + scale * (x @ lora_a) @ lora_b`` with lora_a (in, r), lora_b (r, out);
PEFT computes ``y = W x + (alpha / r) * B(A(x))`` with A.weight (r, in), B.weight (out, r).
So A = lora_a.T, B = lora_b.T and lora_alpha = scale * r. Module paths are mlx-lm's, which
match transformers' for the architectures mlx-lm ports one to one (llama, qwen2, mistral, ...).
DoRA (mlx-lm's DoRALinear and PEFT's use_dora) both scale each output row of
``W + scale * B A`` to the trained magnitude m, the norm taken over the inputs and kept out
of the gradient; m goes to PEFT's ``lora_magnitude_vector``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import mlx.core as mx

from engine.config import resolve_model_path
from engine.export.adapter import AdapterFiles

log = logging.getLogger(__name__)

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
_LAYER = re.compile(r"^(?P<prefix>.*\.(?P<container>[A-Za-z_]+))\.(?P<index>\d+)\.(?P<rel>.+)$")


def peft_state_dict(adapter: AdapterFiles) -> dict[str, mx.array]:
    """PEFT's tensor names and layouts for every LoRA pair and trained bias."""
    out: dict[str, mx.array] = {}
    for module, pair in adapter.modules.items():
        out[f"base_model.model.{module}.lora_A.weight"] = mx.contiguous(pair.lora_a.T)
        out[f"base_model.model.{module}.lora_B.weight"] = mx.contiguous(pair.lora_b.T)
        if pair.magnitude is not None:
            out[f"base_model.model.{module}.lora_magnitude_vector"] = pair.magnitude
    for name, bias in adapter.biases.items():
        owner = name.removesuffix(".linear.bias")
        # PEFT keeps a wrapped layer's own weights under base_layer; mlx-lm under linear.
        peft_name = f"{owner}.base_layer.bias" if owner in adapter.modules else name
        out[f"base_model.model.{peft_name}"] = bias
    return out


def bias_mode(adapter: AdapterFiles) -> str:
    """'none', 'lora_only' (only adapted modules' biases trained) or 'all'."""
    if not adapter.biases:
        return "none"
    owners = {n.removesuffix(".linear.bias") for n in adapter.biases}
    return "lora_only" if owners <= set(adapter.modules) else "all"


def target_selection(adapter: AdapterFiles, total_layers: int | None) -> dict[str, Any]:
    """target_modules (+ layers_to_transform) that select exactly the adapted modules.

    When the adapted set is every chosen module in every chosen layer (what mlx-lm and
    Orchard produce) this is the readable list form; otherwise one exact regex.
    """
    parsed = [_LAYER.match(m) for m in adapter.modules]
    if all(parsed):
        rels = sorted({p["rel"] for p in parsed})
        layers = sorted({int(p["index"]) for p in parsed})
        containers = {p["prefix"] for p in parsed}
        if len(containers) == 1 and len(parsed) == len(rels) * len(layers):
            every = total_layers is not None and layers == list(range(total_layers))
            return {
                "target_modules": rels,
                "layers_to_transform": None if every else layers,
                "layers_pattern": None if every else parsed[0]["container"],
            }
    pattern = "|".join(re.escape(m) for m in sorted(adapter.modules))
    return {
        "target_modules": f"^(?:{pattern})$",
        "layers_to_transform": None,
        "layers_pattern": None,
    }


def peft_config(
    adapter: AdapterFiles, base_model: str | None, total_layers: int | None
) -> dict[str, Any]:
    alpha = adapter.scale * adapter.rank
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": adapter.rank,
        "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
        "lora_dropout": adapter.dropout,
        **target_selection(adapter, total_layers),
        "bias": bias_mode(adapter),
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": adapter.dora,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def base_layer_count(base_model: str | None) -> int | None:
    """num_hidden_layers of a local base folder; None when it cannot be read here."""
    if not base_model:
        return None
    path = Path(base_model).expanduser() / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    count = config.get("num_hidden_layers", config.get("text_config", {}).get("num_hidden_layers"))
    return count if isinstance(count, int) else None


def export_peft(adapter: AdapterFiles, out: str | Path, base_model: str | None = None) -> Path:
    """Write adapter_model.safetensors + adapter_config.json that PEFT loads as they are.

    ``base_model`` (a local folder or Hugging Face id) defaults to the adapter config's "model".
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = base_model or adapter.base_model
    base = resolve_model_path(base) if base else None
    config = peft_config(adapter, base, base_layer_count(base))
    mx.save_safetensors(str(out / PEFT_WEIGHTS), peft_state_dict(adapter), {"format": "pt"})
    (out / PEFT_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    log.info("PEFT adapter written to %s (%d modules)", out, len(adapter.modules))
    return out
