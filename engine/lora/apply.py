"""Put LoRA (or DoRA) on chosen linear modules of chosen layers, with PEFT-style bias handling.

The layers are mlx-lm's own LoRALinear and DoRALinear (over nn.Linear or nn.QuantizedLinear),
so what Orchard trains is what mlx-lm loads. Initialisation draws from an explicit key derived from the
seed, so every worker builds identical adapters whatever the global RNG holds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.tuner.dora import DoRALinear
from mlx_lm.tuner.lora import LoRALinear
from mlx_lm.utils import get_total_parameters

from engine.config import LoraSpec
from engine.model.inspect import match_targets

log = logging.getLogger(__name__)

LINEAR_TYPES = (nn.Linear, nn.QuantizedLinear)
ADAPTER_TYPES = (LoRALinear, DoRALinear)  # lora.type "lora" and "dora"


class LoraError(ValueError):
    """A LoRA setting that does not fit the model; the message names the field and the choices."""


@dataclass
class LoraReport:
    trainable_params: int
    total_params: int
    adapted: list[str] = field(default_factory=list)  # full module paths
    layers: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # in-layer paths, e.g. "self_attn.q_proj"
    trainable_biases: list[str] = field(default_factory=list)
    kind: str = "lora"  # "dora" when the layers are DoRALinear (mlx-lm's fine_tune_type)

    @property
    def trainable_share(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else 0.0


def layer_linear_names(model: nn.Module) -> list[str]:
    """In-layer paths of every linear module in any layer (the possible targets)."""
    names: dict[str, None] = {}
    for layer in model.layers:
        for name, m in layer.named_modules():
            if isinstance(m, (*LINEAR_TYPES, *ADAPTER_TYPES)) and not name.endswith(".linear"):
                names[name] = None
    return sorted(names)


def resolve_targets(model: nn.Module, targets: list[str]) -> list[str]:
    """Match each target by last name ("q_proj") or dotted suffix ("mlp.down_proj")."""
    available = layer_linear_names(model)
    keys: list[str] = []
    for t, hits in match_targets(available, targets).items():
        if not hits:
            raise LoraError(
                f"lora.target_modules: {t!r} is not a linear module of this model; "
                f"choose from: {', '.join(available)}"
            )
        keys.extend(h for h in hits if h not in keys)
    return keys


def resolve_layers(model: nn.Module, layers: list[int]) -> list[int]:
    n = len(model.layers)
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise LoraError(f"lora.layers: {bad} out of range; this model has layers 0..{n - 1}")
    return sorted(set(layers)) if layers else list(range(n))


def apply_lora(model: nn.Module, spec: LoraSpec, seed: int) -> LoraReport:
    """Freeze the base and adapt spec.target_modules in spec.layers; returns what trains."""
    if any(isinstance(m, ADAPTER_TYPES) for _, m in model.named_modules()):
        raise LoraError("apply_lora: this model already has LoRA layers")
    keys = resolve_targets(model, spec.target_modules)
    layers = resolve_layers(model, spec.layers)
    model.freeze()
    scale = spec.alpha / spec.rank
    key = mx.random.key(seed)
    for i in layers:
        layer = model.layers[i]
        modules = dict(layer.named_modules())
        replaced = []
        for k in keys:
            base = modules.get(k)
            if not isinstance(base, LINEAR_TYPES):
                continue  # a layer without this module (e.g. a hybrid architecture)
            key, sub = mx.random.split(key)
            kind = DoRALinear if spec.type == "dora" else LoRALinear
            lora = kind.from_base(base, r=spec.rank, dropout=spec.dropout, scale=scale)
            bound = 1 / math.sqrt(lora.lora_a.shape[0])  # mlx-lm's init, on our own key
            lora.lora_a = mx.random.uniform(-bound, bound, lora.lora_a.shape, key=sub)
            replaced.append((k, lora))
        layer.update_modules(tree_unflatten(replaced))
    for m in bias_modules(model, spec.bias):
        m.unfreeze(keys=["bias"], recurse=False)
    mx.eval(model.trainable_parameters())
    report = lora_report(model)
    log.info(
        "%s on %d modules: %d trainable parameters (%.3f%% of %d)",
        report.kind.upper(), len(report.adapted), report.trainable_params, 100 * report.trainable_share,
        report.total_params,
    )  # fmt: skip
    return report


def bias_modules(model: nn.Module, mode: str) -> list[nn.Module]:
    """Modules whose "bias" trains under a PEFT bias mode ("none", "all", "lora_only").

    Only parameters named exactly "bias": a QuantizedLinear's "biases" are quantization
    offsets of the frozen base, not biases."""
    if mode == "none":
        return []
    if mode == "all":
        mods = [m for _, m in model.named_modules()]
    elif mode == "lora_only":
        mods = [m.linear for _, m in model.named_modules() if isinstance(m, ADAPTER_TYPES)]
    else:
        raise LoraError(f"lora.bias: expected none, all or lora_only, got {mode!r}")
    return [m for m in mods if "bias" in m and isinstance(m["bias"], mx.array)]


def lora_report(model: nn.Module) -> LoraReport:
    """What is adapted and what trains, read from the model itself."""
    trainable = tree_flatten(model.trainable_parameters())
    prefix = layers_prefix(model)
    adapted, layers, keys, kind = [], set(), [], "lora"
    for i, layer in enumerate(model.layers):
        for name, m in layer.named_modules():
            if isinstance(m, ADAPTER_TYPES):
                kind = "dora" if isinstance(m, DoRALinear) else kind
                adapted.append(f"{prefix}{i}.{name}")
                layers.add(i)
                if name not in keys:
                    keys.append(name)
    return LoraReport(
        trainable_params=sum(v.size for _, v in trainable),
        # mlx-lm's count covers leaf modules (quantized weights at their logical size); add
        # the LoRA matrices (and DoRA's magnitudes), which live on the non-leaf layer itself.
        total_params=get_total_parameters(model) + _lora_param_count(model),
        adapted=adapted,
        layers=sorted(layers),
        keys=sorted(keys),
        trainable_biases=[n for n, _ in trainable if n.rsplit(".", 1)[-1] == "bias"],
        kind=kind,
    )


def _lora_param_count(model: nn.Module) -> int:
    return sum(v.size for n, v in adapter_parameters(model))


def adapter_parameters(model: nn.Module) -> list[tuple[str, mx.array]]:
    """(path, array) of every lora_a, lora_b and DoRA magnitude "m", by full path."""
    out = []
    for path, m in model.named_modules():
        if isinstance(m, ADAPTER_TYPES):
            leaves = (
                ("lora_a", "lora_b", "m") if isinstance(m, DoRALinear) else ("lora_a", "lora_b")
            )
            out += [(f"{path}.{leaf}", m[leaf]) for leaf in leaves]
    return out


def layers_prefix(model: nn.Module) -> str:
    """The parameter path of model.layers, e.g. "model.layers." (found by identity)."""
    first = model.layers[0]
    for name, m in model.named_modules():
        if m is first:
            return name[: -len("0")]
    return "layers."
