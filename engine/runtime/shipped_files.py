"""The files a run ships to its workers: which (dataset, and a remote worker's model), where
the model comes from (a local folder or the coordinator's Hugging Face cache), the hashes
that name and check them (each file read once, remembered by path, size and mtime), and the
per-worker progress events while they stream. :class:`engine.runtime.cluster.Cluster` ships
them.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from engine.config import JobSpec, resolve_data_path, resolve_model_path
from engine.events import DownloadEvent, EventSink, ShipEvent
from engine.worker.checksum import file_checksum, file_digests


def files_to_ship(job: JobSpec, remote: bool, model_dir: Path | None = None) -> dict[str, Path]:
    """role -> local file: the dataset (its train and valid files when it is a folder), and
    for remote workers the model's files: those of a local folder, or of the coordinator's
    cached snapshot of a Hugging Face id (``model_dir``, from resolve_model), so a worker
    never needs the internet."""
    out: dict[str, Path] = {}
    data = Path(resolve_data_path(job.data.path)).expanduser()
    if data.is_dir():
        from engine.data.dataset import find_split_files
        from engine.data.problems import ProblemLog

        problems = ProblemLog()
        splits = find_split_files(data, problems)
        if problems.errors:
            raise ValueError("; ".join(str(p) for p in problems.kept))
        out["dataset"] = splits["train"]
        if "valid" in splits:
            out["valid"] = splits["valid"]
    else:
        out["dataset"] = data
    if job.data.valid_path:
        out["valid"] = Path(job.data.valid_path).expanduser()
    model = model_dir or Path(resolve_model_path(job.model.path)).expanduser()
    if remote and model.is_dir():
        for f in sorted(model.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                out[f"model/{f.name}"] = f
    for role, f in out.items():
        if not f.is_file():
            raise ValueError(f"{role}: {f} is not a file")
    return out


def resolve_model(
    job: JobSpec, sink: EventSink | None = None, cancel: threading.Event | None = None
) -> Path | None:
    """The coordinator's own copy of a Hugging Face model (downloaded once into its cache,
    with DownloadEvents), or None when the job names a local folder."""
    from engine.model.download import DownloadProgress, ensure_model
    from engine.model.load import looks_like_local_path

    path = resolve_model_path(job.model.path)
    if Path(path).expanduser().exists() or looks_like_local_path(path):
        return None

    def progress(p: DownloadProgress) -> None:
        if sink is not None:
            sink(DownloadEvent(p.repo_id, p.file, p.done_bytes, p.total_bytes, p.files_done,
                               p.files_total, p.finished))  # fmt: skip

    return ensure_model(path, on_progress=progress, cancel=cancel)


_DIGESTS: dict[tuple[str, int, int], dict[str, str]] = {}  # (path, size, mtime_ns) -> what's known
_HASH_LOCK = threading.Lock()
_HASHING: dict[tuple[str, int, int], threading.Lock] = {}  # one pass per file, however many ask
_SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")


def _digest(path: Path, kind: str) -> str:
    """``kind`` ("sha256" or "checksum") of a file, remembered per (path, size, mtime) for this
    process. One read of a file gives both (engine/worker/checksum.py); a Hugging Face cache
    blob of an LFS file is named by its sha256 already (checked at download), so a
    multi-gigabyte shard is read only for its checksum, and only when a worker lacks it."""
    real = path.resolve()
    blob_sha = real.name if _SHA256_NAME.match(real.name) and real.parent.name == "blobs" else None
    if kind == "sha256" and blob_sha:
        return blob_sha
    st = real.stat()
    key = (str(real), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        busy = _HASHING.setdefault(key, threading.Lock())
    with busy:  # a shard shipped to several workers at once is read once
        with _HASH_LOCK:
            known = _DIGESTS.get(key, {})
        if kind not in known:
            if blob_sha:
                known = {"sha256": blob_sha, "checksum": file_checksum(real)}
            else:
                sha, checksum = file_digests(real)
                known = {"sha256": sha, "checksum": checksum}
            with _HASH_LOCK:
                _DIGESTS[key] = known
    with _HASH_LOCK:
        _HASHING.pop(key, None)
    return known[kind]


def content_hash(path: Path) -> str:
    """sha256 of a file (its name in a worker's cache); see _digest."""
    return _digest(path, "sha256")


def wire_checksum(path: Path) -> str:
    """The tagged xxh3-128 a worker checks the file's bulk stream against; see _digest."""
    return _digest(path, "checksum")


def lazy_wire_checksum(path: Path) -> str | Callable[[], str]:
    """The wire checksum if known (a file read for its sha256 has it), else a function that
    reads the file for it (a Hugging Face blob's): WorkerClient.put_file calls it only for a
    worker that needs it before the bytes; a sealed stream carries it at its end instead,
    computed as the bytes are sealed, with no pass over the file first."""
    real = path.resolve()
    st = real.stat()
    with _HASH_LOCK:
        known = _DIGESTS.get((str(real), st.st_size, st.st_mtime_ns), {})
    return known.get("checksum") or partial(wire_checksum, path)


class ShipProgress:
    """Per-worker ShipEvents while files stream (several at once), at most every ``every_s``
    seconds."""

    def __init__(self, sink: EventSink, address: str, rank: int, sizes: list[int],
                 held: int, every_s: float = 0.2):  # fmt: skip
        self.sink, self.address, self.rank = sink, address, rank
        self.total, self.files_total, self.held = sum(sizes), len(sizes), held
        self.sent_before, self.files_sent = 0, 0
        self.every_s, self.t0, self._last = every_s, time.monotonic(), 0.0
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}  # file -> bytes of it sent so far

    def emit(self, in_file: int, name: str, done: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if name:
                self._in_flight[name] = in_file
            if not done and now - self._last < self.every_s:
                return
            self._last = now
            sent = self.sent_before + sum(self._in_flight.values())
            event = ShipEvent(self.address, self.rank, sent, self.total, self.files_sent,
                              self.files_total, self.held, name,
                              sent / max(now - self.t0, 1e-9), done)  # fmt: skip
        self.sink(event)

    def file_done(self, size: int, name: str = "") -> None:
        with self._lock:
            self._in_flight.pop(name, None)
            self.sent_before += size
            self.files_sent += 1


def shipped_name(role: str, path: Path) -> str:
    """The name a worker keeps a shipped file under (a model's files keep theirs)."""
    return role.split("/", 1)[1] if role.startswith("model/") else path.name
