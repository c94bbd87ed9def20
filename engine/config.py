"""The one config system: a JobSpec made of small dataclasses, TOML in and out.

Every field carries its help text and its allowed values in ``field(metadata=...)``, so the
CLI, the GUI and the validator all read the same source. There is no second copy of a
default anywhere: code that needs a default builds a ``JobSpec()`` and reads it.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
DEMO_MODEL = "demo"  # resolves to resources/models/stories260K
DEMO_DATASET = "demo"  # resolves to resources/datasets/orchard_robot.jsonl
# Runs go to a folder of the user's, never to wherever a program happened to start. The
# "~" is expanded where the folder is made (engine/train/run_dir.py), for whoever runs it.
DEFAULT_RUNS_DIR = "~/Orchard/runs"

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SYNC_MODES = ("all-reduce", "reduce-scatter", "parameter-server", "ring", "mlx")  # concrete
AUTO_MODE = "auto"  # the coordinator resolves it with the planner (engine/plan) before setup
DIST_MODES = (AUTO_MODE, *SYNC_MODES)
BALANCE_POLICIES = ("speed", "fixed", "equal")
DATA_FORMATS = ("auto", "alpaca", "sharegpt", "chat", "completion", "text")


class ConfigError(ValueError):
    """A job setting that is missing, of the wrong type or out of range.

    ``problems`` lists every fault found, each naming its field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _f(default: Any, help: str, **rules: Any) -> Any:
    """A field with help text and validation rules (min, max, choices)."""
    meta = {"help": help, **rules}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelSpec:
    path: str = _f(DEMO_MODEL, "Local folder, Hugging Face id, or 'demo' for the bundled model")
    quantize: bool = _f(False, "QLoRA: quantize the base model before training")
    bits: int = _f(4, "QLoRA bits per weight", choices=(4, 8))
    group_size: int = _f(64, "QLoRA quantization group size", choices=(32, 64, 128))
    trust_remote_code: bool = _f(False, "Allow tokenizer code shipped with the model")


@dataclass
class DataSpec:
    path: str = _f(DEMO_DATASET, "Dataset file or folder (train/valid/test), or 'demo'")
    format: str = _f("auto", "Dataset format, or 'auto' to detect it", choices=DATA_FORMATS)
    valid_path: str = _f("", "Validation file; empty means split from the training data")
    valid_fraction: float = _f(
        0.1, "Share held out for validation when no valid file is given", min=0.0, max=0.5
    )
    max_seq_len: int = _f(
        512, "Longest sequence in tokens; longer records are truncated", min=8, max=131072
    )
    mask_prompt: bool = _f(True, "Train only on response tokens (prompt tokens are masked)")
    packing: bool = _f(
        True,
        "Pack several short records into one sequence, each attending only to itself (on "
        "models that allow it; others train unpacked)",
    )
    max_problems: int = _f(
        50, "How many dataset problems to list before summarising", min=1, max=100000
    )


@dataclass
class LoraSpec:
    rank: int = _f(8, "LoRA rank r", min=1, max=1024)
    alpha: float = _f(
        16.0, "LoRA alpha; the update is scaled by alpha / rank", min=0.0, max=100000.0
    )
    dropout: float = _f(0.0, "Dropout on the LoRA input", min=0.0, max=0.9)
    target_modules: list[str] = _f(
        ["q_proj", "k_proj", "v_proj", "o_proj"], "Linear modules to adapt (names as in the model)"
    )
    layers: list[int] = _f([], "Layer indices to adapt; empty means every layer")
    bias: str = _f("none", "Which biases train", choices=("none", "all", "lora_only"))
    type: str = _f(
        "lora",
        "Adapter kind: lora, or dora (LoRA plus a trained magnitude per output, as mlx-lm's DoRA)",
        choices=("lora", "dora"),
    )


@dataclass
class OptimSpec:
    learning_rate: float = _f(1e-3, "Peak learning rate", min=0.0, max=10.0)
    schedule: str = _f(
        "cosine", "Learning-rate schedule after warmup", choices=("constant", "linear", "cosine")
    )
    warmup_steps: int = _f(0, "Linear warmup steps", min=0, max=10_000_000)
    min_lr_ratio: float = _f(
        0.1, "Final learning rate as a share of the peak (linear, cosine)", min=0.0, max=1.0
    )
    weight_decay: float = _f(0.01, "Decoupled weight decay (AdamW)", min=0.0, max=10.0)
    decay_norms_and_biases: bool = _f(False, "Also apply weight decay to biases and norm weights")
    beta1: float = _f(0.9, "Adam beta1", min=0.0, max=0.999999)
    beta2: float = _f(0.999, "Adam beta2", min=0.0, max=0.99999999)
    eps: float = _f(1e-8, "Adam epsilon", min=0.0, max=1.0)
    grad_clip: float = _f(
        1.0, "Clip the global gradient norm to this; 0 turns clipping off", min=0.0, max=1e6
    )


@dataclass
class RunSpec:
    steps: int = _f(200, "Optimizer steps (ignored when epochs > 0)", min=1, max=100_000_000)
    epochs: float = _f(
        0.0,
        "Train for this many epochs instead of a step count; 0 uses steps",
        min=0.0,
        max=10000.0,
    )
    batch_size: int = _f(
        8, "Global batch size in sequences, split across workers", min=1, max=65536
    )
    grad_accum: int = _f(
        1, "Micro-batches accumulated per optimizer step (per worker)", min=1, max=4096
    )
    precision: str = _f(
        "auto",
        "Compute precision: auto computes in the base model's own dtype, LoRA branch "
        "included; fp32/bf16/fp16 cast every weight (master weights stay fp32 in all)",
        choices=PRECISIONS,
    )
    grad_checkpoint: bool = _f(
        False,
        "Recompute each layer's activations in the backward pass instead of keeping them: "
        "less memory for long sequences, about a third more compute",
    )
    val_every: int = _f(
        50, "Validate every N steps; 0 turns validation off", min=0, max=100_000_000
    )
    val_batches: int = _f(
        4, "Batches per validation; 0 means the whole validation set", min=0, max=100000
    )
    checkpoint_every: int = _f(
        100, "Checkpoint every N steps; 0 means only at the end", min=0, max=100_000_000
    )
    keep_checkpoints: int = _f(2, "How many complete checkpoints to keep", min=1, max=1000)
    seed: int = _f(0, "Seed for shuffling, dropout and initialisation", min=0, max=2**31 - 1)
    out_dir: str = _f(
        DEFAULT_RUNS_DIR,
        "Folder that holds run folders (a relative one is taken from the "
        "current folder and stored as a full path)",
    )
    name: str = _f("", "Run name; empty picks one from the date and time")


@dataclass
class DistSpec:
    workers: int = _f(2, "Local worker processes when no hosts are given", min=1, max=64)
    hosts: list[str] = _f([], "Remote workers as host:port; empty means local workers")
    mode: str = _f(
        AUTO_MODE,
        "How gradients are combined; 'auto' lets the planner pick the mode, compression and "
        "accumulation it predicts fastest for these Macs and links (orchard plan shows why)",
        choices=DIST_MODES,
    )
    compression: str = _f("none", "Gradient encoding on the wire", choices=("none", "bf16", "fp16"))
    bucket_mb: float = _f(32.0, "Gradient bucket size in MiB", min=0.0625, max=4096.0)
    max_failures: int = _f(3, "Worker failures a run survives before it stops", min=0, max=1000)
    step_timeout_s: float = _f(
        120.0, "A step that takes longer than this marks its worker as lost", min=1.0, max=86400.0
    )
    rejoin: bool = _f(
        True,
        "Bring a lost worker back at a step boundary: a local one is restarted, a remote one "
        "rejoins once it answers again",
    )
    balance: str = _f(
        "speed",
        "How the global batch is split over the workers: 'speed' follows each one's measured "
        "throughput (the probe, then its step times), 'fixed' follows dist.speeds and never "
        "re-splits, 'equal' gives each the same number of sequences",
        choices=BALANCE_POLICIES,
    )
    speeds: list[int] = _f(
        [],
        "Relative speeds of the workers, by rank (e.g. [3, 1]: the first takes three times the "
        "sequences of the second); used instead of the probe's; empty: probe them",
    )
    worker_niceness: int = _f(
        10,
        "How far below the app's CPU priority local worker processes run (Unix nice "
        "increment); higher keeps the window responsive while training uses every core",
        min=0,
        max=19,
    )


@dataclass
class JobSpec:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    lora: LoraSpec = field(default_factory=LoraSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    run: RunSpec = field(default_factory=RunSpec)
    dist: DistSpec = field(default_factory=DistSpec)

    # ---- conversions -------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_toml(), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Build and validate a JobSpec; unknown sections or keys are errors, not ignored."""
        problems: list[str] = []
        sections: dict[str, Any] = {}
        if not isinstance(data, dict):
            raise ConfigError([f"job: expected a table of sections, got {type(data).__name__}"])
        for key in data:
            if key not in _SECTIONS:
                problems.append(f"{key}: unknown section (expected one of {', '.join(_SECTIONS)})")
        for name, klass in _SECTIONS.items():
            raw = data.get(name, {})
            if not isinstance(raw, dict):
                problems.append(f"{name}: expected a table, got {type(raw).__name__}")
                raw = {}
            sections[name] = _build_section(name, klass, raw, problems)
        if problems:
            raise ConfigError(problems)
        spec = cls(**sections)
        spec.validate()
        return spec

    @classmethod
    def from_toml(cls, text: str, source: str = "job") -> JobSpec:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError([f"{source}: not valid TOML: {e}"]) from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> JobSpec:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError([f"{p}: no such job file"]) from None
        except IsADirectoryError:
            raise ConfigError([f"{p}: is a folder; expected a job file (.toml)"]) from None
        except UnicodeDecodeError:
            raise ConfigError([f"{p}: not UTF-8 text"]) from None
        return cls.from_toml(text, source=str(p))

    def with_overrides(self, overrides: list[str]) -> JobSpec:
        """Apply ``section.key=value`` strings (values parsed as TOML, else as a string)."""
        data = self.to_dict()
        problems = []
        for item in overrides:
            key, sep, value = item.partition("=")
            section, dot, name = key.strip().partition(".")
            if not sep or not dot:
                problems.append(f"{item!r}: expected section.key=value, e.g. lora.rank=16")
                continue
            if section not in data or name not in data[section]:
                problems.append(f"{key.strip()}: unknown setting")
                continue
            data[section][name] = _parse_value(value.strip())
        if problems:
            raise ConfigError(problems)
        return JobSpec.from_dict(data)

    def validate(self) -> None:
        problems: list[str] = []
        for name in _SECTIONS:
            section = getattr(self, name)
            for f in dataclasses.fields(section):
                _check_rules(f"{name}.{f.name}", getattr(section, f.name), f.metadata, problems)
        if any(i < 0 for i in self.lora.layers):
            problems.append("lora.layers: expected layer indices >= 0")
        if not self.lora.target_modules:
            problems.append("lora.target_modules: expected at least one module name")
        if any(s < 1 for s in self.dist.speeds):
            problems.append("dist.speeds: expected relative speeds >= 1")
        workers = len(self.dist.hosts) or self.dist.workers
        if self.dist.speeds and len(self.dist.speeds) != workers:
            problems.append(f"dist.speeds: expected one per worker ({workers}), "
                            f"got {len(self.dist.speeds)}")  # fmt: skip
        if self.dist.balance == "fixed" and not self.dist.speeds:
            problems.append("dist.balance: 'fixed' needs dist.speeds (one per worker)")
        if problems:
            raise ConfigError(problems)


_SECTIONS: dict[str, type] = {
    "model": ModelSpec,
    "data": DataSpec,
    "lora": LoraSpec,
    "optim": OptimSpec,
    "run": RunSpec,
    "dist": DistSpec,
}


def field_help(section: str, name: str) -> dict[str, Any]:
    """Help text and rules for one setting (used by the CLI and the GUI)."""
    for f in dataclasses.fields(_SECTIONS[section]):
        if f.name == name:
            return dict(f.metadata)
    raise KeyError(f"{section}.{name}")


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _build_section(name: str, klass: type, raw: dict[str, Any], problems: list[str]) -> Any:
    hints = typing.get_type_hints(klass)
    known = {f.name for f in dataclasses.fields(klass)}
    for key in raw:
        if key not in known:
            problems.append(
                f"{name}.{key}: unknown setting (expected one of {', '.join(sorted(known))})"
            )
    values = {}
    for f in dataclasses.fields(klass):
        if f.name not in raw:
            continue
        ok, value = _coerce(raw[f.name], hints[f.name])
        if not ok:
            problems.append(
                f"{name}.{f.name}: expected {_type_name(hints[f.name])}, got {raw[f.name]!r}"
            )
            continue
        values[f.name] = value
    return klass(**values)


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            return False, None
        out = []
        for v in value:
            ok, c = _coerce(v, item)
            if not ok:
                return False, None
            out.append(c)
        return True, out
    if isinstance(hint, types.UnionType):
        return False, None
    if hint is bool:
        return (isinstance(value, bool), value)
    if hint is int:
        return (isinstance(value, int) and not isinstance(value, bool), value)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, None
    if hint is str:
        return (isinstance(value, str), value)
    return False, None


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint)
    )


def _check_rules(key: str, value: Any, meta: Any, problems: list[str]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        problems.append(f"{key}: expected one of {', '.join(map(str, choices))}, got {value!r}")
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value:  # NaN
            problems.append(f"{key}: expected a number in [{lo}, {hi}], got nan")
        elif (lo is not None and value < lo) or (hi is not None and value > hi):
            problems.append(f"{key}: expected a value in [{lo}, {hi}], got {value!r}")


def resolve_model_path(path: str) -> str:
    """'demo' means the bundled TinyStories model; anything else is passed through."""
    return str(RESOURCES / "models" / "stories260K") if path == DEMO_MODEL else path


def resolve_data_path(path: str) -> str:
    return str(RESOURCES / "datasets" / "orchard_robot.jsonl") if path == DEMO_DATASET else path
