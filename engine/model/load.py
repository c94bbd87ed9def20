"""Load a model through mlx-lm: a local folder, a Hugging Face id, or 'demo'.

Folders are checked first (config, model_type, weights) so the common mistakes get a
message that names the folder and the fault, not an mlx-lm traceback. A Hugging Face id is
used from the cache when the cache holds all of it (no network), else downloaded with
mlx-lm's own file patterns (engine/model/download.py: resumable, verified).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.nn as nn
from mlx_lm.utils import load_model as mlx_load_model
from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

from engine.config import ModelSpec, resolve_model_path
from engine.model.errors import ModelError
from engine.model.inspect import is_supported, mlx_model_type, read_config, weight_files
from engine.model.quantize import QuantReport, checkpoint_quant_report, quantize_model
from engine.model.safetensors_header import read_header

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any  # mlx_lm TokenizerWrapper
    path: Path  # the local folder the weights came from
    config: dict[str, Any]  # config.json as mlx-lm read it
    quant_report: QuantReport | None  # None when the base is not quantized


def looks_like_local_path(path: str) -> bool:
    """A path that should exist on disk rather than be treated as a Hugging Face id."""
    return (
        path.startswith(("/", ".", "~"))
        or "\\" in path
        or path.count("/") != 1
        or path.endswith("/")
    )


def resolve_model_dir(path: str, revision: str | None = None) -> Path:
    """A local folder for 'demo', a folder, or a Hugging Face id (from or into the HF cache)."""
    path = resolve_model_path(path)
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelError(f"{local}: expected a model folder, got a file")
        return local
    if looks_like_local_path(path):
        raise ModelError(f"{local}: no such model folder")
    from engine.model.download import ensure_model

    return ensure_model(path, revision)


def check_model_dir(folder: Path) -> dict[str, Any]:
    """The config of a loadable folder; ModelError for what mlx-lm would trip over."""
    config = read_config(folder)
    if not is_supported(config):
        raise ModelError(
            f"{folder / 'config.json'}: model_type: {config['model_type']!r} is not supported "
            f"by mlx-lm (no mlx_lm.models.{mlx_model_type(config)})"
        )
    for f in weight_files(folder):  # headers only: a damaged or truncated file is named here
        read_header(f)
    return config


def load_model(spec: ModelSpec) -> LoadedModel:
    """Model, tokenizer and QLoRA report for a ModelSpec; quantizes the base when asked."""
    folder = resolve_model_dir(spec.path)
    check_model_dir(folder)
    try:
        model, config = mlx_load_model(folder, trust_remote_code=spec.trust_remote_code)
        tokenizer = mlx_load_tokenizer(
            folder,
            {"trust_remote_code": True} if spec.trust_remote_code else {},
            eos_token_ids=config.get("eos_token_id"),
        )
    except (ValueError, KeyError, TypeError, OSError, RuntimeError) as e:  # MLX: RuntimeError
        raise ModelError(f"{folder}: mlx-lm could not load this model: {e}") from None
    report = None
    quantization = config.get("quantization")
    if isinstance(quantization, dict):
        report = checkpoint_quant_report(model, quantization)
        if spec.quantize:
            log.info("%s is already quantized (%s); not quantizing again", folder, report.summary())
    elif spec.quantize:
        report = quantize_model(model, spec.bits, spec.group_size)
    log.info("loaded %s (%s)", folder, config.get("model_type"))
    return LoadedModel(model, tokenizer, folder, config, report)


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    """Only the tokenizer of 'demo', a folder or a Hugging Face id (for dataset checks)."""
    folder = resolve_model_dir(path)
    try:
        extra = {"trust_remote_code": True} if trust_remote_code else {}
        return mlx_load_tokenizer(folder, extra)
    except ImportError as e:
        if e.name != "torch":
            raise
        raise ModelError(  # engine/no_torch.py kept it out: say how to let it in
            f"{folder}: the tokenizer's own code imports PyTorch, which Orchard keeps out of "
            "its processes; install torch and set ORCHARD_ALLOW_TORCH=1 to let it in"
        ) from None
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise ModelError(f"{folder}: cannot load the tokenizer: {e}") from None
