"""What the Hugging Face cache already holds: models, their size, architecture and quantization.

The cache is huggingface_hub's own (``~/.cache/huggingface/hub``, or HF_HUB_CACHE / HF_HOME),
read with its ``scan_cache_dir``; a model's details come from the snapshot's config.json, so
listing is instant and needs no network. ``cached_snapshot`` is what loading uses first: a
complete snapshot on disk is used as it is, online or not.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".incomplete"  # a resumable download of a blob (engine/model/download.py)


def hub_cache_dir() -> Path:
    """The Hugging Face cache folder, read from the environment at call time."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE).expanduser()


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set: only the cache may be used."""
    return any(
        os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def repo_folder(repo_id: str, cache_dir: Path | None = None) -> Path:
    """``models--org--name`` inside the cache (huggingface_hub's layout)."""
    return (cache_dir or hub_cache_dir()) / ("models--" + repo_id.replace("/", "--"))


@dataclass(frozen=True)
class CachedModel:
    repo_id: str
    commit: str
    path: Path  # the snapshot folder mlx-lm loads
    size_bytes: int  # bytes on disk of this snapshot's files
    model_type: str  # "" when the snapshot has no readable config.json
    architectures: tuple[str, ...]
    quantization: dict[str, Any] | None  # config "quantization" (bits, group_size)
    complete: bool  # config and every weight file present
    missing: tuple[str, ...]  # what a complete snapshot would still need
    partial_bytes: int  # bytes of interrupted downloads waiting to resume
    refs: tuple[str, ...]  # branch names pointing here, e.g. ("main",)

    @property
    def quant_text(self) -> str:
        q = self.quantization
        return f"{q.get('bits')}-bit g{q.get('group_size')}" if q else "float"

    @property
    def architecture(self) -> str:
        return self.architectures[0] if self.architectures else self.model_type or "unknown"


def list_cached_models(cache_dir: Path | None = None) -> list[CachedModel]:
    """Every model snapshot in the cache, newest first; nothing is downloaded."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    folder = cache_dir or hub_cache_dir()
    try:
        info = scan_cache_dir(folder)
    except CacheNotFound:
        return []
    for warning in info.warnings:
        log.debug("cache scan: %s", warning)
    out: list[CachedModel] = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        partial = _partial_bytes(repo.repo_path)
        for rev in repo.revisions:
            out.append(_describe(repo.repo_id, rev.commit_hash, rev.snapshot_path,
                                 rev.size_on_disk, partial, tuple(sorted(rev.refs))))  # fmt: skip
    return sorted(out, key=lambda m: (m.repo_id, m.commit))


def cached_snapshot(
    repo_id: str, revision: str | None = None, cache_dir: Path | None = None
) -> Path | None:
    """The complete snapshot folder of ``repo_id`` at ``revision`` (a branch, or a commit),
    or None when the cache does not hold all of it."""
    repo = repo_folder(repo_id, cache_dir)
    revision = revision or "main"
    commit = revision
    ref = repo / "refs" / revision
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
    snap = repo / "snapshots" / commit
    if not snap.is_dir():
        return None
    return snap if not missing_files(snap) else None


def missing_files(snapshot: Path) -> list[str]:
    """What a snapshot lacks to be loaded: config.json, weights, or shards its index names."""
    if not (snapshot / "config.json").is_file():
        return ["config.json"]
    index = snapshot / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return [index.name + " (unreadable)"]
        return sorted(s for s in shards if not (snapshot / s).is_file())
    if not any(p.is_file() for p in snapshot.glob("model*.safetensors")):
        return ["model*.safetensors"]
    return []


def format_cache_table(models: list[CachedModel], cache_dir: Path | None = None) -> str:
    """A terminal table of the cache (what `orchard models` prints)."""
    folder = cache_dir or hub_cache_dir()
    if not models:
        return f"no models in the Hugging Face cache ({folder})"
    rows = [("MODEL", "SIZE", "ARCHITECTURE", "QUANT", "STATE")]
    for m in models:
        if m.complete:
            state = "ready"
        else:
            state = "incomplete: missing " + ", ".join(m.missing[:3])
        if m.partial_bytes:
            state += f" ({human_bytes(m.partial_bytes)} of a download to resume)"
        rows.append((m.repo_id, human_bytes(m.size_bytes), m.architecture, m.quant_text, state))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in rows
    ]
    return "\n".join([*lines, f"cache: {folder}"])


def _describe(repo_id: str, commit: str, snap: Path, size: int, partial: int,
              refs: tuple[str, ...]) -> CachedModel:  # fmt: skip
    config: dict[str, Any] = {}
    try:
        config = json.loads((snap / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    if not isinstance(config, dict):
        config = {}
    quant = config.get("quantization") or config.get("quantization_config")
    archs = config.get("architectures") or ()
    missing = tuple(missing_files(snap))
    return CachedModel(
        repo_id=repo_id,
        commit=commit,
        path=snap,
        size_bytes=int(size),
        model_type=str(config.get("model_type", "")),
        architectures=tuple(archs) if isinstance(archs, list) else (str(archs),),
        quantization=quant if isinstance(quant, dict) else None,
        complete=not missing,
        missing=missing,
        partial_bytes=partial,
        refs=refs,
    )


def _partial_bytes(repo_path: Path) -> int:
    blobs = repo_path / "blobs"
    if not blobs.is_dir():
        return 0
    return sum(p.stat().st_size for p in blobs.glob("*" + PARTIAL_SUFFIX) if p.is_file())


def human_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
