"""Preflight: refuse a run that cannot work before any worker starts, and offer what fits.

One function for the CLI and the app, ``preflight(job) -> PreflightResult``. Nothing here
loads weights or starts a worker. In order it checks:
- the settings (JobSpec.validate), and LoRA targets and layers against the model;
- the model: config.json, its type, the safetensors headers (engine.model.inspect) and the
  tokenizer, which the dataset check needs anyway. A Hugging Face id not in the cache is
  described from the Hub instead (engine.model.hub.inspect_remote: config.json and the
  safetensors headers by HTTP range requests, nothing written, HUB_TIMEOUT_S per request), so
  a run that would not fit is refused before any download; a missing or gated id is refused
  by name; a Hub that cannot be asked (offline, unreachable) leaves a note, memory unchecked;
- the job against the model (engine.model.fit.check_fit): LoRA targets and layers, the QLoRA
  group size; its warnings become notes;
- the dataset, read, validated and tokenized as every worker will (engine.data.prepare_data),
  so its errors are named ``file:line: field: message`` before anything starts;
- memory: engine.model.memory's estimate per worker, times the workers on each machine,
  against that machine's memory (this machine's for local workers, all of which share it;
  for a remote worker what its Describe reports). Over REFUSE_SHARE the run is refused and
  the result offers what fits under FIT_SHARE: each fix a set of JobSpec overrides that one
  click (``Suggestion.apply``) or ``--set`` (``Suggestion.set_args``) applies.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.config import ConfigError, JobSpec, resolve_data_path, resolve_model_path
from engine.machine import FIT_SHARE, REFUSE_SHARE, memory_bytes

log = logging.getLogger(__name__)

MAX_PROBLEMS_SHOWN = 5  # dataset errors named in the message; the rest are counted
MAX_ACCUM = 4096  # run.grad_accum's upper bound (engine/config.py)
HUB_TIMEOUT_S = 5.0  # per Hub request: a slow or dead network must not hold up Start


@dataclass(frozen=True)
class Machine:
    """A machine the run would use: ``processes`` workers share its ``memory_bytes``."""

    name: str  # "this machine" or the dist.hosts entry
    memory_bytes: int  # 0: unknown (not checked)
    processes: int = 1
    host: str = ""  # its dist.hosts entry; "" for this machine


@dataclass(frozen=True)
class MachineFit:
    machine: Machine
    need_bytes: int  # processes x the estimate per worker
    level: str  # "fits" (<= FIT_SHARE), "tight" (<= REFUSE_SHARE), "won't fit", "unknown"

    def describe(self) -> str:
        m = self.machine
        per = (
            f"{m.processes} workers × {gib(self.need_bytes // m.processes)} = "
            if m.processes > 1
            else ""
        )
        have = f"{gib(m.memory_bytes)}" if m.memory_bytes else "unknown memory"
        return f"{m.name} ({have}): {per}{gib(self.need_bytes)}"  # fmt: skip


@dataclass(frozen=True)
class Suggestion:
    """A fix the estimate says fits: JobSpec overrides, applied together."""

    title: str  # e.g. "Gradient accumulation 27: micro-batches of 186, same global batch"
    overrides: dict[str, Any]  # "section.name" -> value, e.g. {"run.grad_accum": 27}
    detail: str  # what it needs, e.g. "this machine (23.5 GiB): 2 workers × 8.1 GiB = ..."
    need_bytes: int  # the estimate per worker with the overrides

    def apply(self, job: JobSpec) -> JobSpec:
        """A validated copy of ``job`` with the overrides (``job`` itself is not changed)."""
        data = job.to_dict()
        for key, value in self.overrides.items():
            section, name = key.split(".", 1)
            data[section][name] = value
        return JobSpec.from_dict(data)

    def set_args(self) -> list[str]:
        """The overrides as ``orchard train --set`` takes them."""
        return [f"{key}={toml_value(value)}" for key, value in self.overrides.items()]


@dataclass(frozen=True)
class Refusal:
    kind: str  # "settings" | "model" | "dataset" | "memory"
    message: str  # names the problem: the field, the file and line, or the machine


@dataclass
class PreflightResult:
    refusals: list[Refusal] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)  # only when memory refused
    fits: list[MachineFit] = field(default_factory=list)  # per machine, when estimated
    estimate: Any = None  # engine.model.MemoryEstimate per worker, when estimated
    notes: list[str] = field(default_factory=list)  # worth saying, not blocking
    train_items: int = 0  # tokenized training items (0 when the dataset was not read)
    # each training item's tokens and trained tokens (engine.plan.data_shape.ItemLengths):
    # the planner's real widths; also remembered for this job, so it is not tokenized twice
    lengths: Any = None

    @property
    def ok(self) -> bool:
        return not self.refusals

    def summary(self) -> str:
        """Why the run cannot start (and the notes), without the fixes."""
        lines: list[str] = []
        if self.refusals:
            lines.append("This run cannot start:")
            for r in self.refusals:
                first, *rest = r.message.splitlines()
                lines.append(f"- {r.kind}: {first}")
                lines += [f"    {line}" for line in rest]
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)

    def message(self, cli: bool = False) -> str:
        """The text the CLI prints and the app shows; ``cli`` adds each fix's --set flags."""
        lines = [self.summary()] if self.refusals or self.notes else []
        if self.suggestions:
            lines.append("What fits instead:")
            for i, s in enumerate(self.suggestions, 1):
                lines.append(f"  {i}. {s.title}; needs {s.detail}")
                if cli:
                    lines.append(
                        "     " + " ".join(f"--set {shlex.quote(a)}" for a in s.set_args())
                    )
        return "\n".join(lines)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n < 10 * 2**30 else f"{n / 2**30:.1f} GiB"


def toml_value(value: Any) -> str:
    """A value as TOML source (what --set parses)."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


# ---- the check ------------------------------------------------------------------------------
def preflight(
    job: JobSpec,
    host_memory: Mapping[str, int] | None = None,
    local_memory: int | None = None,
    describe: Callable[[str], int] | None = None,
    hub_timeout_s: float = HUB_TIMEOUT_S,
) -> PreflightResult:
    """Everything that would make ``job`` fail or exhaust a machine, before any worker starts.

    ``local_memory``: this machine's memory in bytes (default: what the OS says).
    ``host_memory``: memory of ``dist.hosts`` entries the caller already knows (the app's
    cluster table); any other host is asked over Describe (``describe``, default
    :func:`describe_memory`). ``hub_timeout_s`` bounds each request to the Hugging Face Hub
    for a model not yet downloaded. Never raises for bad input: every fault is a Refusal."""
    result = PreflightResult()
    try:
        job.validate()
    except ConfigError as e:
        result.refusals.append(Refusal("settings", "\n".join(e.problems)))
        return result
    info, tokenizer = _check_model(job, result, hub_timeout_s)
    longest = _check_dataset(job, tokenizer, result)
    if info is None:
        return result
    _check_fit(job, info, result)
    if result.refusals:
        return result  # memory is only worth checking for a run that would otherwise work
    machines = machines_for(job, host_memory, local_memory, describe, result.notes)
    _check_memory(job, info, machines, longest, result)
    return result


def _check_model(job: JobSpec, result: PreflightResult, hub_timeout_s: float) -> tuple[Any, Any]:
    """ModelInfo and tokenizer, or refusals. A Hugging Face id not yet downloaded gives the
    ModelInfo from the Hub and no tokenizer (the dataset is then read, not tokenized), or
    (None, None) with a note when the Hub cannot be asked."""
    from engine.model import ModelError, inspect_model, load_tokenizer
    from engine.model.load import check_model_dir

    try:
        folder = local_model_dir(job.model.path)
        if folder is None:
            return _check_remote(job.model.path, result, hub_timeout_s), None
        check_model_dir(folder)
        info = inspect_model(folder)
    except ModelError as e:
        result.refusals.append(Refusal("model", str(e)))
        return None, None
    try:
        tokenizer = load_tokenizer(str(folder), job.model.trust_remote_code)
    except ModelError as e:
        result.refusals.append(Refusal("model", str(e)))
        return info, None
    return info, tokenizer


def _check_remote(repo_id: str, result: PreflightResult, timeout_s: float) -> Any:
    """The ModelInfo of a Hub model not in the cache, from its config.json and safetensors
    headers (nothing downloaded, nothing written). A missing, gated or unusable id is refused;
    a Hub that cannot be asked is a note, and memory goes unchecked."""
    from engine.model import ModelError
    from engine.model.cache import human_bytes
    from engine.model.hub import HubUnreachable, inspect_remote

    try:
        remote = inspect_remote(repo_id, timeout_s=timeout_s)
    except HubUnreachable as e:
        result.notes.append(
            f"model {repo_id!r} is not downloaded yet and the Hub could not be asked, so the "
            f"run's memory could not be checked: {e}"
        )
        return None
    except ModelError as e:  # HubError: no such id, gated, not a model mlx-lm loads
        result.refusals.append(Refusal("model", str(e)))
        return None
    if not remote.info.supported:
        result.refusals.append(Refusal("model", f"{repo_id}/config.json: model_type: "
            f"{remote.info.model_type!r} is not supported by mlx-lm; nothing was downloaded"))  # fmt: skip
        return None
    result.notes.append(
        f"model {repo_id!r} is not downloaded yet: checked from its config.json and "
        f"safetensors headers on the Hub; the run first downloads "
        f"{human_bytes(remote.repo.total_bytes)}"
    )
    return remote.info


def local_model_dir(path: str) -> Path | None:
    """The folder of 'demo', a local folder, or a Hugging Face id already in the cache;
    None for an id that would have to be downloaded. Raises ModelError for a bad path."""
    from engine.model import ModelError
    from engine.model.load import looks_like_local_path

    local = Path(resolve_model_path(path)).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelError(f"{local}: expected a model folder, got a file")
        return local
    if looks_like_local_path(path):
        raise ModelError(f"{local}: no such model folder")
    from huggingface_hub import snapshot_download
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    try:
        return Path(
            snapshot_download(path, allow_patterns=DEFAULT_ALLOW_PATTERNS, local_files_only=True)
        )
    except Exception:  # noqa: BLE001 - not in the cache (or not an id): the run's own check says
        return None


def _check_dataset(job: JobSpec, tokenizer: Any, result: PreflightResult) -> int:
    """Refusals for dataset errors; returns the longest tokenized training item (0: unknown)."""
    from engine.data import DatasetError, prepare_data, read_dataset

    try:
        if tokenizer is None:  # still name the format and validation errors
            read = read_dataset(
                resolve_data_path(job.data.path), job.data.format, job.data.max_problems
            )
            if read.problems.errors:
                raise DatasetError(read.problems)
            return 0
        data = prepare_data(job.data, tokenizer, seed=job.run.seed)
    except DatasetError as e:
        result.refusals.append(Refusal("dataset", dataset_message(job.data.path, e)))
        return 0
    except (OSError, ValueError) as e:
        result.refusals.append(Refusal("dataset", f"{job.data.path}: {e}"))
        return 0
    result.train_items = len(data.train)
    from engine.plan.data_shape import remember

    result.lengths = remember(job, data.train)
    lengths = data.train.lengths()
    return int(lengths.max()) if len(lengths) else 0


def dataset_message(path: str, e: Any) -> str:
    """The count and the first errors, ``file:line: field: message`` each."""
    errors = [p for p in e.problems if p.is_error]
    n = e.log.errors
    lines = [f"{n} error{'s' if n != 1 else ''} in {resolve_data_path(path)}"]
    lines += [str(p) for p in errors[:MAX_PROBLEMS_SHOWN]]
    if n > MAX_PROBLEMS_SHOWN:
        lines.append(f"... and {n - MAX_PROBLEMS_SHOWN} more (orchard inspect-data lists them)")
    return "\n".join(lines)


def _check_fit(job: JobSpec, info: Any, result: PreflightResult) -> None:
    """What fails every worker at SetupJob (engine.model.fit.check_fit): LoRA targets and
    layers the model does not have, a QLoRA group size that does not divide a target's
    input, a model type mlx-lm lacks. Its warnings are notes."""
    from engine.model import check_fit

    for problem in check_fit(info, job):
        if problem.level != "error":
            result.notes.append(str(problem))
        else:
            kind = "model" if problem.field == "model.path" else "settings"
            result.refusals.append(Refusal(kind, str(problem)))


# ---- machines ---------------------------------------------------------------------------------
def machines_for(
    job: JobSpec,
    host_memory: Mapping[str, int] | None = None,
    local_memory: int | None = None,
    describe: Callable[[str], int] | None = None,
    notes: list[str] | None = None,
) -> list[Machine]:
    """The machines of the run: this one with dist.workers processes, or each host."""
    if not job.dist.hosts:
        have = memory_bytes() if local_memory is None else local_memory
        return [Machine("this machine", have, job.dist.workers)]
    known = dict(host_memory or {})
    out = []
    for host in job.dist.hosts:
        have = known.get(host, 0)
        if not have:
            try:
                have = (describe or describe_memory)(host)
            except Exception as e:  # noqa: BLE001 - an unreachable host fails the run's own start
                if notes is not None:
                    notes.append(f"{host}: memory unknown ({e}); not checked")
                have = 0
        out.append(Machine(host, have, 1, host))
    return out


def describe_memory(address: str, timeout_s: float = 5.0) -> int:
    """The memory a remote worker reports (Describe), over the channel a run would use:
    the shared token in ORCHARD_WORKER_TOKEN, else the pinned, paired TLS channel."""
    from engine.rpc.auth import TOKEN_ENV
    from engine.rpc.worker_client import WorkerClient

    token = os.environ.get(TOKEN_ENV, "")
    if token:
        client = WorkerClient(address, token, timeout_s=timeout_s)
    else:
        from engine.rpc.paired_client import connect_paired
        from engine.trust import open_trust_home

        client, _ = connect_paired(address, open_trust_home(), timeout_s=timeout_s)
    with client:
        return int(client.describe().get("memory_bytes") or 0)


# ---- memory -----------------------------------------------------------------------------------
class _Sizer:
    """Estimates for variants of the job: overrides -> (estimate per worker, fit per machine)."""

    def __init__(self, job: JobSpec, info: Any, machines: list[Machine], longest: int):
        self.job, self.info, self.machines, self.longest = job, info, machines, longest

    def variant(self, overrides: Mapping[str, Any]) -> tuple[JobSpec, list[Machine]]:
        job = Suggestion("", dict(overrides), "", 0).apply(self.job) if overrides else self.job
        machines = self.machines
        if "dist.workers" in overrides and not job.dist.hosts:
            machines = [replace(machines[0], processes=job.dist.workers)]
        if "dist.hosts" in overrides:
            machines = [m for m in machines if m.host in job.dist.hosts]
        return job, machines

    def width(self, job: JobSpec) -> int:
        """Tokens per sequence in the widest batch: a batch is as wide as its longest item
        (padded to 8), unless packing fills every sequence to max_seq_len."""
        if self.longest and not job.data.packing:
            return min(job.data.max_seq_len, -(-self.longest // 8) * 8)
        return job.data.max_seq_len

    def size(self, overrides: Mapping[str, Any]) -> tuple[Any, list[MachineFit]]:
        from engine.model import estimate_memory

        job, machines = self.variant(overrides)
        sized = replace(job, data=replace(job.data, max_seq_len=self.width(job)))
        est = estimate_memory(self.info, sized, workers=sum(m.processes for m in machines))
        return est, [_fit(m, est.total_bytes * m.processes) for m in machines]

    def fits(self, overrides: Mapping[str, Any]) -> bool:
        """Every machine under FIT_SHARE (or of unknown memory)."""
        return all(f.level in ("fits", "unknown") for f in self.size(overrides)[1])

    def with_accum(self, overrides: Mapping[str, Any]) -> dict[str, Any] | None:
        """``overrides`` as they are if they fit, else with the least gradient accumulation
        (the largest micro-batch, same global batch) that fits; None if none does."""
        if self.fits(overrides):
            return dict(overrides)
        job, machines = self.variant(overrides)
        per_worker = math.ceil(job.run.batch_size / sum(m.processes for m in machines))
        micro = math.ceil(per_worker / job.run.grad_accum)

        def accum_for(m: int) -> dict[str, Any]:
            return {**overrides, "run.grad_accum": math.ceil(per_worker / m)}

        # the largest micro-batch that fits (the need grows with it), within run.grad_accum's range
        lo, hi = max(1, math.ceil(per_worker / MAX_ACCUM)), micro - 1
        if hi < lo or not self.fits(accum_for(lo)):
            return None
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self.fits(accum_for(mid)) else (lo, mid - 1)
        return accum_for(lo)


def _fit(machine: Machine, need: int) -> MachineFit:
    have = machine.memory_bytes
    if not have:
        level = "unknown"
    elif need <= FIT_SHARE * have:
        level = "fits"
    elif need <= REFUSE_SHARE * have:
        level = "tight"
    else:
        level = "won't fit"
    return MachineFit(machine, need, level)


def _check_memory(
    job: JobSpec, info: Any, machines: list[Machine], longest: int, result: PreflightResult
) -> None:
    sizer = _Sizer(job, info, machines, longest)
    est, fits = sizer.size({})
    result.estimate, result.fits = est, fits
    for f in fits:
        if f.level == "unknown" and f.machine.memory_bytes == 0 and not f.machine.host:
            result.notes.append("this machine's memory is unknown; memory not checked")
        elif f.level == "tight":
            share = f.need_bytes / f.machine.memory_bytes
            result.notes.append(f"tight: {f.describe()}, {share:.0%} of its memory; it may swap")
    over = [f for f in fits if f.level == "won't fit"]
    if not over:
        return
    width = sizer.width(job)
    batch = (f"a micro-batch of {est.micro_batch} sequence{'s' if est.micro_batch != 1 else ''} "
             f"× {width} tokens per worker")  # fmt: skip
    one_seq = sizer.size({"run.grad_accum": MAX_ACCUM})[1]  # micro-batch of 1 wherever possible
    lines = []
    for f in over:
        single = next(g for g in one_seq if g.machine.name == f.machine.name)
        if single.level == "won't fit":
            lines.append(f"{f.machine.name} ({gib(f.machine.memory_bytes)}) cannot fit even one "
                         f"sequence of {width} tokens: a micro-batch of 1 needs "
                         f"{gib(single.need_bytes)} there")  # fmt: skip
        else:
            lines.append(f"won't fit on {f.describe()} ({batch})")
    result.refusals.append(Refusal("memory", "\n".join(lines)))
    result.suggestions = _suggestions(job, info, machines, sizer, over)


def _suggestions(
    job: JobSpec, info: Any, machines: list[Machine], sizer: _Sizer, over: list[MachineFit]
) -> list[Suggestion]:
    """What fits, simplest change first: more accumulation (the same training), fewer
    workers on this machine or without the Macs that cannot hold it, QLoRA, fewer layers.
    A change that fits only with more accumulation is offered with it when accumulation
    alone does not fit."""
    found: list[dict[str, Any]] = []
    accum = sizer.with_accum({})
    if accum is not None:
        found.append(accum)

    def offer(overrides: dict[str, Any]) -> bool:
        chosen = sizer.with_accum(overrides) if accum is None else overrides
        if chosen is not None and sizer.fits(chosen):
            found.append(chosen)
            return True
        return False

    if not job.dist.hosts:
        for w in range(job.dist.workers - 1, 0, -1):
            if offer({"dist.workers": w}):
                break
    else:
        keep = [m.host for m in machines if m not in [f.machine for f in over]]
        if keep:
            offer({"dist.hosts": keep})
    qlora = {"model.quantize": True}
    if not job.model.quantize and not info.quantization and _fit_ok(info, job, qlora):
        offer(qlora)
    adapted = len(set(job.lora.layers)) if job.lora.layers else info.num_layers
    for k in range(adapted - 1, 0, -1):  # the top k layers: the least activation memory
        if offer({"lora.layers": list(range(info.num_layers - k, info.num_layers))}):
            break
    return [_describe(job, info, o, sizer) for o in found]


def _fit_ok(info: Any, job: JobSpec, overrides: dict[str, Any]) -> bool:
    """No check_fit error with ``overrides`` (QLoRA is not offered where a target's input
    width does not divide the group size: preflight would then refuse the fix)."""
    from engine.model import check_fit

    variant = Suggestion("", overrides, "", 0).apply(job)
    return not [p for p in check_fit(info, variant) if p.level == "error"]


def _describe(job: JobSpec, info: Any, overrides: dict[str, Any], sizer: _Sizer) -> Suggestion:
    est, fits = sizer.size(overrides)
    variant, _ = sizer.variant(overrides)
    parts = []
    for key, value in overrides.items():
        if key == "run.grad_accum":
            parts.append(f"gradient accumulation {value}: micro-batches of {est.micro_batch}, "
                         f"the same global batch of {job.run.batch_size}")  # fmt: skip
        elif key == "dist.workers":
            parts.append(
                f"{value} local worker{'s' if value != 1 else ''} instead of {job.dist.workers}"
            )
        elif key == "dist.hosts":
            gone = [h for h in job.dist.hosts if h not in value]
            parts.append(f"leave out {', '.join(gone)}")
        elif key == "model.quantize":
            parts.append(f"QLoRA: quantize the base model to {variant.model.bits} bits")
        elif key == "lora.layers":
            parts.append(f"adapt only the top {len(value)} of {info.num_layers} layers "
                         f"({value[0]}-{value[-1]})" if len(value) > 1 else
                         f"adapt only the top layer ({value[0]}) of {info.num_layers}")  # fmt: skip
    title = "; ".join(parts)
    title = title[:1].upper() + title[1:]
    detail = "; ".join(f.describe() for f in fits)
    return Suggestion(title, overrides, detail, est.total_bytes)
