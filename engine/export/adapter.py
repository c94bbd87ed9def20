"""Read and check an adapter folder in mlx-lm's format, so every export starts from facts.

The folder holds ``adapter_config.json`` (fine_tune_type, lora_parameters {rank, scale,
dropout}, model) and ``adapters.safetensors`` (``<module>.lora_a`` (in, r), ``<module>.lora_b``
(r, out), maybe trained biases). Orchard's adapters (engine.lora.save_adapter) keep trained
biases in a side file and pad layers outside the chosen set with all-zero pairs; both are
understood here. The adapted modules come from the tensors, not from ``num_layers``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx

from engine.lora.adapters import ADAPTER_FILE, CONFIG_FILE, read_adapter_config
from engine.lora.apply import LoraError

log = logging.getLogger(__name__)


class ExportError(ValueError):
    """An adapter, run folder or export target that cannot be exported; the message names it."""


@dataclass
class LoraPair:
    lora_a: mx.array  # (in, r)
    lora_b: mx.array  # (r, out)
    magnitude: mx.array | None = None  # DoRA's m (out,): the norm each output row is scaled to


@dataclass
class AdapterFiles:
    folder: Path
    config: dict[str, Any]
    rank: int
    scale: float
    dropout: float
    modules: dict[str, LoraPair] = field(default_factory=dict)  # module path -> pair
    biases: dict[str, mx.array] = field(default_factory=dict)  # parameter path -> bias

    @property
    def dora(self) -> bool:
        return self.config.get("fine_tune_type") == "dora"

    @property
    def base_model(self) -> str | None:
        model = self.config.get("model")
        return model if isinstance(model, str) and model else None


def _number(params: dict[str, Any], key: str, where: Path) -> float:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExportError(f"{where}: lora_parameters.{key}: expected a number, got {value!r}")
    return float(value)


def _load(path: Path) -> dict[str, mx.array]:
    if not path.is_file():
        raise ExportError(f"{path}: missing")
    try:
        return mx.load(str(path))
    except (RuntimeError, ValueError, OSError) as e:
        raise ExportError(f"{path}: not a readable safetensors file: {e}") from None


def read_adapter(folder: str | Path) -> AdapterFiles:
    """Load and check an adapter folder; ExportError names the file and the fault."""
    folder = Path(folder)
    try:
        config = read_adapter_config(folder)
    except LoraError as e:
        raise ExportError(str(e)) from None
    where = folder / CONFIG_FILE
    params = config["lora_parameters"]
    if not isinstance(params, dict):
        raise ExportError(f"{where}: lora_parameters: expected an object with rank and scale")
    rank = int(_number(params, "rank", where))
    adapter = AdapterFiles(
        folder, config, rank, _number(params, "scale", where), float(params.get("dropout") or 0.0)
    )
    _split_weights(adapter, _load(folder / ADAPTER_FILE), folder / ADAPTER_FILE)
    bias_file = (config.get("orchard") or {}).get("bias_file")
    if bias_file:
        adapter.biases.update(_load(folder / bias_file))
    log.info("adapter %s: %d modules, rank %d", folder, len(adapter.modules), rank)
    return adapter


def _split_weights(adapter: AdapterFiles, weights: dict[str, mx.array], where: Path) -> None:
    halves: dict[str, dict[str, mx.array]] = {}
    for name, value in weights.items():
        module, _, leaf = name.rpartition(".")
        if leaf in ("lora_a", "lora_b") or (leaf == "m" and adapter.dora):
            halves.setdefault(module, {})[leaf] = value
        elif leaf == "bias":
            adapter.biases[name] = value
        else:
            raise ExportError(
                f"{where}: {name}: not a LoRA tensor (expected names ending in "
                "lora_a, lora_b, m (DoRA) or bias; full fine-tunes do not export)"
            )
    for module, pair in sorted(halves.items()):
        if not {"lora_a", "lora_b"} <= set(pair):
            missing = ({"lora_a", "lora_b"} - set(pair)).pop()
            raise ExportError(f"{where}: {module}.{missing} is missing")
        a, b = pair["lora_a"], pair["lora_b"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise ExportError(
                f"{where}: {module}: lora_a {tuple(a.shape)} and lora_b {tuple(b.shape)} "
                "are not (in, r) and (r, out)"
            )
        if a.shape[1] != adapter.rank:
            raise ExportError(
                f"{where}: {module}: rank {a.shape[1]} differs from "
                f"lora_parameters.rank {adapter.rank} in {CONFIG_FILE}"
            )
        if not mx.any(a).item():
            continue  # Orchard's padding for an unchosen layer: its update is exactly zero
        m = pair.get("m")
        if adapter.dora and (m is None or m.shape != (b.shape[1],)):
            raise ExportError(f"{where}: {module}.m: a DoRA module needs its magnitude "
                              f"(shape ({b.shape[1]},))")  # fmt: skip
        adapter.modules[module] = LoraPair(a, b, m)
    if not adapter.modules:
        raise ExportError(f"{where}: holds no (non-zero) lora_a/lora_b tensors")
