"""Atomic checkpoints with a verified manifest, and fallback to the last good one.

Layout: ``checkpoints/step_0000100/{state.safetensors, meta.json, job.toml, manifest.json}``
and ``checkpoints/latest`` (the directory name). A checkpoint is written into
``step_XXXXXXX.tmp``, every file fsynced, the directory renamed, and only then is
``latest`` replaced (temp file + rename), so a crash at any point leaves either the old
or the new checkpoint complete, never a half-written one that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx

from engine.train.safetensors_write import dtype_name, write_safetensors

log = logging.getLogger(__name__)

STATE_FILE = "state.safetensors"
META_FILE = "meta.json"
JOB_FILE = "job.toml"
MANIFEST = "manifest.json"
_DIR_RE = re.compile(r"^step_(\d{7,})$")


class CheckpointError(RuntimeError):
    """No usable checkpoint (missing, damaged, or not matching the model)."""


@dataclass
class Checkpoint:
    path: Path
    step: int
    arrays: dict[str, mx.array]
    meta: dict[str, Any]
    job_toml: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    arrays: dict[str, Any],
    meta: dict[str, Any],
    job_toml: str,
    keep: int = 2,
) -> Path:
    """Write a complete checkpoint for ``step`` atomically; prune to ``keep`` newest.
    ``arrays``: numpy or mx arrays (engine/train/safetensors_write.py)."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    tmp, final = root / f"{name}.tmp", root / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    state_sha, tensors = write_safetensors(tmp / STATE_FILE, arrays)  # hashed as written
    (tmp / META_FILE).write_text(json.dumps({"step": step, **meta}, indent=1), encoding="utf-8")
    (tmp / JOB_FILE).write_text(job_toml, encoding="utf-8")
    files = {}
    for fname in (STATE_FILE, META_FILE, JOB_FILE):
        _fsync_file(tmp / fname)
        sha = state_sha if fname == STATE_FILE else _sha256(tmp / fname)
        files[fname] = {"sha256": sha, "bytes": (tmp / fname).stat().st_size}
    shapes = {k: [shape, dtype_name(code)] for k, (shape, code) in tensors.items()}
    manifest = {"step": step, "files": files, "shapes": shapes}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    _fsync_file(tmp / MANIFEST)
    _fsync_dir(tmp)
    if final.exists():  # a re-save of the same step (e.g. stop right after a checkpoint)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    pointer_tmp = root / "latest.tmp"
    pointer_tmp.write_text(name + "\n", encoding="utf-8")
    _fsync_file(pointer_tmp)
    os.replace(pointer_tmp, root / "latest")
    _fsync_dir(root)
    prune_checkpoints(run_dir, keep)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete-looking checkpoint directories, newest step first (temp dirs excluded)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _DIR_RE.match(p.name))
    ]
    return [p for _, p in sorted(found, reverse=True)]


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints, and stale ``.tmp`` directories."""
    for old in list_checkpoints(run_dir)[max(keep, 1) :]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in checkpoint_dir(run_dir).glob("step_*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def verify_checkpoint(
    path: Path, expected_shapes: dict[str, tuple[int, ...]] | None = None
) -> Checkpoint:
    """Load one checkpoint, checking the manifest's sha256 sums and the tensor shapes."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path / MANIFEST}: unreadable manifest ({e})") from None
    for fname, info in manifest.get("files", {}).items():
        f = path / fname
        if not f.is_file():
            raise CheckpointError(f"{f}: missing")
        if _sha256(f) != info.get("sha256"):
            raise CheckpointError(f"{f}: sha256 does not match the manifest (damaged file)")
    if set(manifest.get("files", {})) != {STATE_FILE, META_FILE, JOB_FILE}:
        raise CheckpointError(
            f"{path / MANIFEST}: expected entries for {STATE_FILE}, {META_FILE}, {JOB_FILE}"
        )
    arrays = mx.load(str(path / STATE_FILE))
    for key, (shape, _dtype) in manifest["shapes"].items():
        if key not in arrays or list(arrays[key].shape) != shape:
            raise CheckpointError(
                f"{path / STATE_FILE}: tensor {key} missing or not of shape {shape}"
            )
    if expected_shapes is not None:
        for key, shape in expected_shapes.items():
            if key not in arrays:
                raise CheckpointError(
                    f"{path}: no tensor {key} (was the model or LoRA setup changed?)"
                )
            if tuple(arrays[key].shape) != tuple(shape):
                raise CheckpointError(
                    f"{path}: tensor {key} has shape {tuple(arrays[key].shape)}, the model expects {tuple(shape)}"
                )
    meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    job_toml = (path / JOB_FILE).read_text(encoding="utf-8")
    return Checkpoint(path, int(manifest["step"]), arrays, meta, job_toml)


def load_latest_checkpoint(
    run_dir: str | Path, expected_shapes: dict[str, tuple[int, ...]] | None = None
) -> Checkpoint:
    """The checkpoint ``latest`` names, or, if it is damaged, the newest one that verifies."""
    root = checkpoint_dir(run_dir)
    candidates = list_checkpoints(run_dir)
    pointer = root / "latest"
    if pointer.is_file():
        named = root / pointer.read_text(encoding="utf-8").strip()
        candidates = [named] + [c for c in candidates if c != named]
    problems = []
    for path in candidates:
        try:
            return verify_checkpoint(path, expected_shapes)
        except CheckpointError as e:
            log.warning("skipping checkpoint: %s", e)
            problems.append(str(e))
    if not problems:
        raise CheckpointError(f"{root}: no checkpoints to resume from")
    raise CheckpointError(f"{root}: no usable checkpoint: " + "; ".join(problems))
