"""Adapters on disk in mlx-lm's format: adapters.safetensors + adapter_config.json.

A DoRA adapter (lora.type = "dora") also holds each module's magnitude ``m`` and says
``"fine_tune_type": "dora"``, which is what mlx_lm.load needs to rebuild DoRALinear layers.

mlx-lm rebuilds LoRA on the LAST num_layers layers with the same keys. When Orchard adapted
layers that are not such a suffix, the smallest covering suffix is written and the layers
in it that were not chosen get lora_b = 0, an exact no-op, so mlx_lm.load reproduces the
model. mlx-lm refuses any tensor other than lora_a/lora_b in a LoRA adapter, so trained
biases go to a side file that Orchard reads and fuse_adapter folds in (see README.md).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.tuner.lora import LoRALinear
from mlx_lm.tuner.utils import linear_to_lora_layers

from engine.config import JobSpec, LoraSpec, resolve_model_path
from engine.lora.apply import (
    ADAPTER_TYPES,
    LoraError,
    LoraReport,
    adapter_parameters,
    apply_lora,
    bias_modules,
    layers_prefix,
    lora_report,
)

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapters.safetensors"
CONFIG_FILE = "adapter_config.json"
BIAS_FILE = "trained_biases.safetensors"  # Orchard-only; mlx-lm ignores it
FINE_TUNE_TYPES = ("lora", "dora")  # what Orchard trains; mlx-lm's "full" is not an adapter


def save_adapter(model: nn.Module, out_dir: str | Path, job: JobSpec, base_model_id: str) -> Path:
    """Write the model's LoRA (and trained biases) so mlx_lm.load(..., adapter_path) reproduces it."""
    report = lora_report(model)
    if not report.adapted:
        raise LoraError("save_adapter: the model has no LoRA layers (call apply_lora first)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = report.layers[0]
    weights = dict(adapter_parameters(model))
    sample = _first_lora(model)
    rank = sample.lora_a.shape[1]
    weights.update(_padding(model, report, rank, first))
    _save_safetensors(out / ADAPTER_FILE, weights)
    # by the job's bias mode, not by what is trainable now: a frozen model still saves them
    wanted = {id(m) for m in bias_modules(model, job.lora.bias)}
    biases = {f"{path}.bias": m["bias"] for path, m in model.named_modules() if id(m) in wanted}
    if biases:
        _save_safetensors(out / BIAS_FILE, biases)
        log.warning(
            "%d trained biases saved to %s: mlx_lm.load(adapter_path=...) does not apply them; "
            "fuse the adapter to carry them into mlx-lm",
            len(biases),
            BIAS_FILE,
        )
    elif (out / BIAS_FILE).exists():
        (out / BIAS_FILE).unlink()
    config = adapter_config(job, base_model_id, report, rank, sample.scale, len(model.layers))
    config["orchard"]["bias_file"] = BIAS_FILE if biases else None
    tmp = out / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(config, indent=4), encoding="utf-8")
    os.replace(tmp, out / CONFIG_FILE)
    return out


def model_reference(path: str) -> str:
    """What adapter_config.json's "model" must say for mlx-lm to find the base: a Hugging Face
    id as it is, a folder (the bundled demo model included) as its absolute path."""
    from engine.model.load import looks_like_local_path

    resolved = resolve_model_path(path)
    local = Path(resolved).expanduser()
    if local.exists() or looks_like_local_path(resolved):
        return str(local.resolve())
    return resolved


def restamp_config(raw: bytes, job: JobSpec) -> bytes:
    """adapter_config.json written on a worker, with the coordinator's view put back: the
    base model as mlx-lm resolves it here, and the job as the user wrote it (a worker sees
    its own cached copies of the dataset and model under hashed paths)."""
    config = json.loads(raw)
    config["model"] = model_reference(job.model.path)
    if isinstance(config.get("orchard"), dict):
        config["orchard"]["job"] = job.to_dict()
    return json.dumps(config, indent=4).encode()


def adapter_config(
    job: JobSpec, base: str, report: LoraReport, rank: int, scale: float, n_layers: int
) -> dict[str, Any]:
    """mlx-lm's adapter_config.json fields, plus an "orchard" section mlx-lm ignores."""
    return {
        "fine_tune_type": report.kind,
        "model": model_reference(base),
        "num_layers": n_layers - report.layers[0],
        "lora_parameters": {
            "rank": rank,
            "scale": float(scale),
            "dropout": job.lora.dropout,
            "keys": report.keys,
        },
        "seed": job.run.seed,
        "batch_size": job.run.batch_size,
        "iters": job.run.steps,
        "learning_rate": job.optim.learning_rate,
        "max_seq_length": job.data.max_seq_len,
        "grad_accumulation_steps": job.run.grad_accum,
        "mask_prompt": job.data.mask_prompt,
        "orchard": {
            "alpha": float(scale) * rank,  # what the model holds, even if the job disagrees
            "layers": report.layers,
            "target_modules": report.keys,
            "bias": job.lora.bias,
            "quantize": (
                {"bits": job.model.bits, "group_size": job.model.group_size}
                if job.model.quantize
                else None
            ),
            "job": job.to_dict(),
        },
    }


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    folder = Path(adapter_dir)
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise LoraError(f"{folder}: no such adapter folder")
    if not path.is_file() or not (folder / ADAPTER_FILE).is_file():
        raise LoraError(f"{folder}: expected {CONFIG_FILE} and {ADAPTER_FILE}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LoraError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    kind = config.get("fine_tune_type", "lora")
    if kind not in FINE_TUNE_TYPES:
        raise LoraError(
            f"{path}: fine_tune_type: expected one of {', '.join(FINE_TUNE_TYPES)}, got {kind!r}"
            + (" (a full fine-tune is a model, not an adapter)" if kind == "full" else "")
        )
    for key in ("num_layers", "lora_parameters"):
        if key not in config:
            raise LoraError(f"{path}: {key}: missing")
    return config


def load_adapter(model: nn.Module, adapter_dir: str | Path) -> LoraReport:
    """Put a saved adapter (Orchard's or mlx-lm's) on a base model, biases included."""
    folder = Path(adapter_dir)
    config = read_adapter_config(folder)
    orchard = config.get("orchard") or {}
    if _first_lora(model, required=False) is None:
        try:
            _rebuild_lora(model, config)
        except (LoraError, ValueError, KeyError, TypeError) as e:
            raise LoraError(f"{folder}: does not fit this model: {e}") from None
    have = dict(tree_flatten(model.parameters()))
    weights = _load_tensors(folder / ADAPTER_FILE)
    keep = _check_tensors(folder / ADAPTER_FILE, weights, have, allow_zero_extra=bool(orchard))
    if orchard.get("bias_file"):
        biases = _load_tensors(folder / orchard["bias_file"])
        keep += _check_tensors(folder / orchard["bias_file"], biases, have, False)
    model.load_weights(keep, strict=False)
    mx.eval(model.parameters())
    return lora_report(model)


def _rebuild_lora(model: nn.Module, config: dict[str, Any]) -> None:
    """LoRA layers as the adapter describes them: Orchard's chosen layers, else mlx-lm's suffix."""
    params = config["lora_parameters"]
    orchard = config.get("orchard")
    kind = config.get("fine_tune_type", "lora")
    if not orchard:
        model.freeze()
        linear_to_lora_layers(model, int(config["num_layers"]), params, use_dora=kind == "dora")
        return
    spec = LoraSpec(
        rank=int(params["rank"]),
        alpha=float(orchard["alpha"]),
        dropout=float(params.get("dropout", 0.0)),
        target_modules=list(orchard["target_modules"]),
        layers=list(orchard["layers"]),
        bias=str(orchard.get("bias", "none")),
        type=kind,
    )
    apply_lora(model, spec, seed=0)


def _load_tensors(path: Path) -> dict[str, mx.array]:
    try:
        return mx.load(str(path))
    except (OSError, RuntimeError, ValueError) as e:
        raise LoraError(f"{path}: cannot read the tensors: {e}") from None


def _check_tensors(
    file: Path, weights: dict[str, mx.array], have: dict[str, mx.array], allow_zero_extra: bool
) -> list[tuple[str, mx.array]]:
    """Tensors to load; padding layers (all-zero lora_b, absent from the model) are dropped."""
    keep, errors = [], []
    for name, w in weights.items():
        if name not in have:
            if allow_zero_extra and not mx.any(w).item():
                continue
            errors.append(f"{name}: not a parameter of this model")
        elif w.shape != have[name].shape:
            errors.append(f"{name}: shape {tuple(w.shape)}, model has {tuple(have[name].shape)}")
        else:
            keep.append((name, w))
    if errors:
        raise LoraError(f"{file}: does not fit this model: " + "; ".join(errors[:10]))
    return keep


def _padding(model: nn.Module, report: LoraReport, rank: int, first: int) -> dict[str, mx.array]:
    """Zero LoRA weights for unchosen layers inside the saved suffix (delta = 0 exactly)."""
    prefix = layers_prefix(model)
    pad: dict[str, mx.array] = {}
    for i in range(first, len(model.layers)):
        if i in report.layers:
            continue
        modules = dict(model.layers[i].named_modules())
        for k in report.keys:
            m = modules.get(k)
            if isinstance(m, (nn.Linear, nn.QuantizedLinear)):
                shape = LoRALinear.from_base(m, r=rank).lora_a.shape
                pad[f"{prefix}{i}.{k}.lora_a"] = mx.zeros(shape)
                pad[f"{prefix}{i}.{k}.lora_b"] = mx.zeros((rank, m.weight.shape[0]))
    return pad


def _first_lora(model: nn.Module, required: bool = True) -> nn.Module | None:
    for _, m in model.named_modules():
        if isinstance(m, ADAPTER_TYPES):
            return m
    if required:
        raise LoraError("the model has no LoRA layers")
    return None


def _save_safetensors(path: Path, weights: dict[str, mx.array]) -> None:
    """Write then rename, so a crash never leaves a half-written adapter."""
    tmp = path.with_name(path.stem + ".tmp.safetensors")
    mx.save_safetensors(str(tmp), weights, metadata={"format": "mlx"})
    os.replace(tmp, path)
