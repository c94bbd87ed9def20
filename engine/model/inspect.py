"""Describe a model from config.json and safetensors headers alone (no weights are read).

This is what the app shows before a run: architecture, size, dtype, quantization and the
linear modules LoRA can target, for a checkpoint of any size, in milliseconds. A folder with a
config.json and no weights (resources/model_configs/) is described from the config alone: the
shapes come from mlx-lm's own model class built lazily (MLX allocates nothing until evaluated).
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_lm.utils import MODEL_ARCHITECTURE_REMAPPING, MODEL_REMAPPING

from engine.config import resolve_model_path
from engine.model.errors import ModelError
from engine.model.safetensors_header import DTYPE_BYTES, TensorHeader, read_header

WEIGHT_GLOB = "model*.safetensors"  # the files mlx_lm.utils.load_model reads
INDEX_FILE = "model.safetensors.index.json"
_LAYER_RE = re.compile(r"^(?P<prefix>(?:.*\.)?layers)\.(?P<idx>\d+)\.(?P<rest>.+)$")
_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # LoraSpec's default targets
LORA_RANKS_SHOWN = (8, 16)
_CONFIG_ALIASES = {
    "num_layers": ("num_hidden_layers", "n_layer", "n_layers", "num_layers"),
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    "intermediate_size": ("intermediate_size", "ffn_dim", "n_inner"),
    "num_heads": ("num_attention_heads", "n_head", "n_heads"),
}


@dataclass(frozen=True)
class LinearModule:
    """One linear module inside a transformer layer: a LoRA target choice."""

    name: str  # path inside a layer, e.g. "self_attn.q_proj"
    in_features: int
    out_features: int
    has_bias: bool
    quantized: bool


@dataclass(frozen=True)
class ModelInfo:
    path: str
    model_type: str
    architectures: tuple[str, ...]
    supported: bool  # mlx-lm has an implementation for this model_type
    num_layers: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    param_count: int  # logical parameters (a quantized weight counts as out x in)
    weight_bytes: int  # bytes of tensor data on disk
    dtype: str  # the floating dtype holding most parameters
    quantization: dict[str, Any] | None  # config "quantization" (bits, group_size, ...)
    tied_embeddings: bool
    layer_prefix: str  # e.g. "model.layers"
    linear_modules: tuple[LinearModule, ...]
    bias_params: int  # parameters in tensors whose leaf name is "bias"
    weight_files: tuple[str, ...]
    tensors: dict[str, TensorHeader] = field(repr=False, compare=False, default_factory=dict)
    weights_present: bool = True  # False: a config-only folder, shapes from config.json

    @property
    def module_names(self) -> list[str]:
        return [m.name for m in self.linear_modules]

    def lora_params(self, rank: int, targets: list[str] | None = None) -> int:
        """Trainable LoRA parameters (A and B of every adapted module in every layer) at
        ``rank``; ``targets`` as in LoraSpec.target_modules, None for every linear module."""
        names = set(self.module_names)
        if targets is not None:
            names = {n for hits in match_targets(self.module_names, targets).values() for n in hits}
        per_layer = sum(
            m.in_features + m.out_features for m in self.linear_modules if m.name in names
        )
        return rank * per_layer * self.num_layers

    def format_text(self) -> str:
        """A few lines for a terminal or a tooltip."""
        quant = self.quantization
        lines = [
            f"model       {self.path}",
            f"type        {self.model_type}{'' if self.supported else ' (not supported by mlx-lm)'}",
            f"size        {self.param_count / 1e6:.3f}M parameters, {self.weight_bytes / 2**20:.1f} MiB on disk",
            f"shape       {self.num_layers} layers, hidden {self.hidden_size}, "
            f"MLP {self.intermediate_size}, vocab {self.vocab_size}, heads {self.num_heads}/{self.num_kv_heads}",
            f"dtype       {self.dtype}"
            + (f", quantized {quant.get('bits')}-bit group {quant.get('group_size')}" if quant else ""),
            f"embeddings  {'tied' if self.tied_embeddings else 'separate lm_head'}",
            *([] if self.weights_present else
              ["weights     absent: parameters counted from config.json (no weights read)"]),
            "modules     " + ", ".join(
                f"{m.name} ({m.in_features}->{m.out_features}{', bias' if m.has_bias else ''})"
                for m in self.linear_modules
            ),
        ]  # fmt: skip
        attention = [n for n in ATTENTION_TARGETS if match_targets(self.module_names, [n])[n]]
        for rank in LORA_RANKS_SHOWN:
            lines.append(
                f"LoRA r={rank:<3}  {self.lora_params(rank, attention) / 1e6:.3f}M params attention-only "
                f"({'/'.join(attention) or 'none'}), {self.lora_params(rank) / 1e6:.3f}M all-linear "
                f"(fp32 gradient {self.lora_params(rank, attention) * 4 / 2**20:.1f} / "
                f"{self.lora_params(rank) * 4 / 2**20:.1f} MiB a step)"
            )
        return "\n".join(lines)


def read_config(folder: Path) -> dict[str, Any]:
    """config.json as a dict; ModelError naming the file (and line) when it is missing or bad."""
    cfg = folder / "config.json"
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder")
    if not cfg.is_file():
        raise ModelError(f"{folder}: no config.json (expected a Hugging Face or MLX model folder)")
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelError(f"{cfg}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{cfg}: cannot read: {e}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{cfg}: expected a JSON object")
    if not isinstance(data.get("model_type"), str):
        raise ModelError(f'{cfg}: model_type: missing (expected e.g. "llama" or "qwen2")')
    return data


def mlx_model_type(config: dict[str, Any]) -> str:
    """The mlx_lm.models module name for a config, with mlx-lm's own remapping."""
    model_type = config["model_type"]
    archs = config.get("architectures") or ()
    for arch in [archs] if isinstance(archs, str) else archs:
        if (model_type, arch) in MODEL_ARCHITECTURE_REMAPPING:
            return MODEL_ARCHITECTURE_REMAPPING[(model_type, arch)]
    return MODEL_REMAPPING.get(model_type, model_type)


def is_supported(config: dict[str, Any]) -> bool:
    name = mlx_model_type(config)
    return name.isidentifier() and importlib.util.find_spec(f"mlx_lm.models.{name}") is not None


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files mlx-lm would load; checks a shard index against the folder."""
    files = sorted(folder.glob(WEIGHT_GLOB))
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            listed = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ModelError(f"{index}: expected a JSON object with a weight_map") from None
        missing = sorted(f for f in listed if not (folder / f).is_file())
        if missing:
            raise ModelError(f"{index}: shard files missing from the folder: {', '.join(missing)}")
    if not files:
        others = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".gguf"))
        hint = f" (found {', '.join(others)}; convert with mlx_lm.convert)" if others else ""
        raise ModelError(f"{folder}: no weights: no {WEIGHT_GLOB} files{hint}")
    return files


def inspect_model(path: str | Path) -> ModelInfo:
    """ModelInfo of a local folder (or 'demo') from config.json and safetensors headers only."""
    folder = Path(resolve_model_path(str(path))).expanduser()
    config = read_config(folder)
    tensors: dict[str, TensorHeader] = {}
    try:
        files = weight_files(folder)
    except ModelError as no_weights:
        if not _config_only(folder):
            raise
        files, tensors = [], config_tensors(folder, config, no_weights)
    for f in files:
        tensors.update(read_header(f))
    return describe_model(str(folder), config, tensors, tuple(str(f) for f in files))


def describe_model(
    path: str, config: dict[str, Any], tensors: dict[str, TensorHeader], files: tuple[str, ...]
) -> ModelInfo:
    """ModelInfo from a config and tensor headers, wherever they came from (a folder, or the
    Hub's range requests: engine/model/hub.py)."""
    text = {**config, **(config.get("text_config") or {})}  # multimodal configs nest it
    quant = config.get("quantization") or config.get("quantization_config")
    prefix, layer_idx, linears = _layer_modules(tensors, quant)
    hidden = _get(text, "hidden_size")
    vocab = int(text.get("vocab_size") or 0)
    heads = _get(text, "num_heads")
    return ModelInfo(
        path=path,
        model_type=str(config["model_type"]),
        architectures=tuple(config.get("architectures") or ()),
        supported=is_supported(config),
        num_layers=_get(text, "num_layers") or len(layer_idx),
        hidden_size=hidden,
        intermediate_size=_get(text, "intermediate_size"),
        vocab_size=vocab,
        num_heads=heads,
        num_kv_heads=int(text.get("num_key_value_heads") or heads),
        param_count=_param_count(tensors, quant),
        weight_bytes=sum(t.nbytes for t in tensors.values()),
        dtype=_main_dtype(tensors),
        quantization=quant if isinstance(quant, dict) else None,
        tied_embeddings=bool(
            text.get("tie_word_embeddings", config.get("tie_word_embeddings", True))
        )
        and not any(n.endswith("lm_head.weight") for n in tensors),
        layer_prefix=prefix,
        linear_modules=tuple(linears),
        bias_params=sum(t.size for n, t in tensors.items() if n.endswith(".bias")),
        weight_files=files,
        tensors=tensors,
        weights_present=bool(files),
    )


def _config_only(folder: Path) -> bool:
    """No weight file of any kind: a folder that only describes a model (config.json)."""
    kinds = (".safetensors", ".bin", ".pt", ".gguf", ".npz")
    return not (folder / INDEX_FILE).exists() and not any(
        p.suffix in kinds for p in folder.iterdir()
    )


def config_tensors(
    folder: Path, config: dict[str, Any], no_weights: ModelError
) -> dict[str, TensorHeader]:
    """Tensor shapes of a config-only folder, from mlx-lm's model class built lazily: the
    same names and shapes mlx-lm would load, in the config's dtype. ``no_weights`` is raised
    (with the reason added) when the config cannot build the model."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    try:
        model_class, args_class = _get_classes(config)
        model = model_class(args_class.from_dict(config))
    except Exception as e:  # noqa: BLE001 - any config mlx-lm cannot build is named
        raise ModelError(f"{no_weights}; config.json alone does not describe the model: "
                         f"{type(e).__name__}: {e}") from None  # fmt: skip
    dtype = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}.get(
        str(config.get("torch_dtype", "")), "BF16"
    )
    out = {}
    for name, p in tree_flatten(model.parameters()):
        shape = tuple(int(d) for d in p.shape)
        size = 1
        for d in shape:
            size *= d
        out[name] = TensorHeader(name, dtype, shape, size * DTYPE_BYTES[dtype], "")
    return out


def quant_bits(quant: dict[str, Any] | None, module_path: str) -> int:
    """Bits of one quantized module, honouring mlx-lm's per-path overrides."""
    if not isinstance(quant, dict):
        return 4
    override = quant.get(module_path)
    if isinstance(override, dict) and "bits" in override:
        return int(override["bits"])
    return int(quant.get("bits", 4))


def is_quantized_weight(tensors: dict[str, TensorHeader], name: str) -> bool:
    return name.endswith(".weight") and name[: -len("weight")] + "scales" in tensors


def _get(config: dict[str, Any], key: str) -> int:
    for alias in _CONFIG_ALIASES[key]:
        if isinstance(config.get(alias), int):
            return int(config[alias])
    return 0


def _layer_modules(
    tensors: dict[str, TensorHeader], quant: Any
) -> tuple[str, set[int], list[LinearModule]]:
    """The layer prefix, the layer indices and the 2-D weights of the layers (union, in order)."""
    prefixes: Counter[str] = Counter()
    for name in tensors:
        m = _LAYER_RE.match(name)
        if m:
            prefixes[m["prefix"]] += 1
    if not prefixes:
        return "", set(), []
    prefix = prefixes.most_common(1)[0][0]
    indices: set[int] = set()
    found: dict[str, LinearModule] = {}
    for name, t in tensors.items():
        m = _LAYER_RE.match(name)
        if not m or m["prefix"] != prefix:
            continue
        indices.add(int(m["idx"]))
        rest = m["rest"]
        if not rest.endswith(".weight") or len(t.shape) != 2:
            continue
        module = rest[: -len(".weight")]
        if module in found:
            continue
        quantized = is_quantized_weight(tensors, name)
        in_features = t.shape[1]
        if quantized:
            in_features = in_features * 32 // quant_bits(quant, name[: -len(".weight")])
        found[module] = LinearModule(
            name=module,
            in_features=in_features,
            out_features=t.shape[0],
            has_bias=f"{prefix}.{m['idx']}.{module}.bias" in tensors,
            quantized=quantized,
        )
    return prefix, indices, sorted(found.values(), key=lambda lm: lm.name)


def _param_count(tensors: dict[str, TensorHeader], quant: Any) -> int:
    total = 0
    for name, t in tensors.items():
        base = name.rsplit(".", 1)[0]
        if name.endswith((".scales", ".biases")) and f"{base}.weight" in tensors:
            if is_quantized_weight(tensors, f"{base}.weight"):
                continue  # quantization metadata, not parameters
        if is_quantized_weight(tensors, name):
            total += t.size * 32 // quant_bits(quant, base)
        else:
            total += t.size
    return total


def _main_dtype(tensors: dict[str, TensorHeader]) -> str:
    sizes: Counter[str] = Counter()
    for t in tensors.values():
        if t.dtype in _DTYPE_NAMES:
            sizes[t.dtype] += t.size
    return _DTYPE_NAMES[sizes.most_common(1)[0][0]] if sizes else "unknown"


def match_targets(available: list[str], targets: list[str]) -> dict[str, list[str]]:
    """Each target -> the in-layer module paths it names: an exact path or a dotted suffix.

    "q_proj" matches "self_attn.q_proj"; "mlp.down_proj" matches only that path. A target
    that matches nothing maps to an empty list, so callers can name it in their error.
    """
    return {t: [n for n in available if n == t or n.endswith("." + t)] for t in targets}
