"""Download a Hub model into the Hugging Face cache with progress, cancel and resume.

huggingface_hub (2.x) downloads each file into a process-unique temporary file and deletes
it when the download fails or is interrupted, so a cancelled 4 GB shard starts again from
zero. Orchard keeps its own partial file, ``blobs/<etag>.incomplete``, and resumes it with
an HTTP range request; a file is verified (size, and sha256 for LFS files, whose etag is
that hash) before it enters the cache. The layout is huggingface_hub's own (blobs,
snapshots/<commit>/<name> symlinks, refs/<branch>), so mlx_lm.load and every HF tool see the
model as cached. refs/<branch> is written last: until every file is in, the model is not
"cached", and a failed download changes nothing a loader would pick up.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.model.cache import (
    PARTIAL_SUFFIX,
    cached_snapshot,
    hub_cache_dir,
    hub_offline,
    repo_folder,
)
from engine.model.hub import (
    TIMEOUT_S,
    DownloadCancelled,
    HubError,
    RemoteFile,
    RemoteRepo,
    check_remote_config,
    check_repo_id,
    endpoint,
    fetch_small,
    hub_errors,
    offline_message,
    repo_files,
)

log = logging.getLogger(__name__)

BLOCK_BYTES = 1 << 20
RETRIES = 3  # a connection cut mid-file is resumed this many times before giving up
RETRY_WAIT_S = 0.2
PROGRESS_EVERY_S = 0.1


@dataclass(frozen=True)
class DownloadProgress:
    """Where a download stands; ``done_bytes`` counts files already cached as done."""

    repo_id: str
    file: str
    file_bytes: int
    file_total: int
    done_bytes: int
    total_bytes: int
    files_done: int
    files_total: int
    resumed_from: int = 0  # bytes of this file kept from an earlier, interrupted attempt
    finished: bool = False

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 1.0


ProgressFn = Callable[[DownloadProgress], None]


def ensure_model(
    repo_id: str,
    revision: str | None = None,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """The snapshot folder of a Hub model: from the cache when complete, else downloaded.

    Offline (HF_HUB_OFFLINE) only the cache is used, and a model missing from it is a
    HubError that lists what the cache holds."""
    check_repo_id(repo_id)
    found = cached_snapshot(repo_id, revision)
    if found is not None:
        return found
    if hub_offline():
        raise HubError(offline_message(repo_id))
    return download_model(repo_id, revision, on_progress, cancel)


def download_model(
    repo_id: str,
    revision: str | None = None,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """Fetch every file mlx-lm loads into the cache (resuming partial files); returns the
    snapshot folder. Raises HubError (DownloadCancelled when ``cancel`` is set)."""
    repo = repo_files(repo_id, revision)
    # config.json into memory first: a gated repo, or a model mlx-lm cannot run, is refused
    # before anything is written
    config = fetch_small(repo, "config.json")
    check_remote_config(repo, config)
    cache = cache_dir or hub_cache_dir()
    storage = repo_folder(repo_id, cache)
    snapshot = storage / "snapshots" / repo.commit
    tracker = _Tracker(repo, on_progress)
    for f in sorted(repo.files, key=lambda f: (f.name != "config.json", f.size)):
        if cancel is not None and cancel.is_set():
            raise DownloadCancelled(f"{repo_id}: download cancelled before {f.name}; "
                                    "the files downloaded are kept: run it again to go on")  # fmt: skip
        pointer = snapshot / f.name
        if pointer.is_file():
            tracker.file_done(f)
            continue
        blob = storage / "blobs" / f.etag
        if f.name == "config.json" and not blob.is_file():
            _write_atomic(blob, config)
        if not blob.is_file():
            _fetch_blob(repo, f, blob, cache, tracker, cancel)
        _link(blob, pointer)
        tracker.file_done(f)
    ref = storage / "refs" / repo.revision
    if repo.revision != repo.commit:
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        tmp.write_text(repo.commit, encoding="utf-8")
        os.replace(tmp, ref)
    tracker.finish()
    log.info("%s@%s: %d files in %s", repo_id, repo.commit[:12], len(repo.files), snapshot)
    return snapshot


class _Tracker:
    """Turns byte counts into DownloadProgress calls, at most every PROGRESS_EVERY_S."""

    def __init__(self, repo: RemoteRepo, on_progress: ProgressFn | None):
        self.repo, self.on_progress = repo, on_progress
        self.done, self.files_done = 0, 0
        self._last = 0.0

    def report(self, f: RemoteFile, have: int, resumed: int = 0, force: bool = False) -> None:
        now = time.monotonic()
        if self.on_progress is None or (not force and now - self._last < PROGRESS_EVERY_S):
            return
        self._last = now
        self.on_progress(DownloadProgress(
            self.repo.repo_id, f.name, have, f.size, self.done + have, self.repo.total_bytes,
            self.files_done, len(self.repo.files), resumed,
        ))  # fmt: skip

    def file_done(self, f: RemoteFile) -> None:
        self.done += f.size
        self.files_done += 1
        self.report(f, 0, force=True)

    def finish(self) -> None:
        if self.on_progress is not None:
            n = len(self.repo.files)
            self.on_progress(DownloadProgress(self.repo.repo_id, "", 0, 0, self.done,
                                              self.repo.total_bytes, n, n, finished=True))  # fmt: skip


def _fetch_blob(repo: RemoteRepo, f: RemoteFile, blob: Path, cache: Path, tracker: _Tracker,
                cancel: threading.Event | None) -> None:  # fmt: skip
    """Download one file into ``blob`` through its resumable partial file."""
    from huggingface_hub.utils import WeakFileLock

    partial = blob.with_name(blob.name + PARTIAL_SUFFIX)
    lock = cache / ".locks" / blob.parent.parent.name / f"{f.etag}.lock"  # huggingface_hub's
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):
        if blob.is_file():  # another process finished it while we waited
            return
        attempts = 0
        while True:
            try:
                _stream(repo, f, partial, tracker, cancel)
                break
            except _Cut as cut:
                attempts += 1
                if attempts > RETRIES and cut.why.startswith("ConnectError"):
                    raise HubError(
                        f"{repo.repo_id}/{f.name}: the Hugging Face Hub ({endpoint()}) cannot be "
                        f"reached ({cut.why}); nothing of this file was downloaded"
                        + (f" beyond the {cut.have:,} bytes kept to resume" if cut.have else "")
                    ) from None
                if attempts > RETRIES:
                    raise HubError(
                        f"{repo.repo_id}/{f.name}: the download was cut at {cut.have:,} of "
                        f"{f.size:,} bytes ({cut.why}). The part already downloaded is kept: "
                        "run the download again to resume it"
                    ) from None
                log.warning("%s: cut at %d bytes (%s); resuming", f.name, cut.have, cut.why)
                time.sleep(RETRY_WAIT_S * attempts)
        _verify(repo, f, partial)
        os.replace(partial, blob)


class _Cut(Exception):
    def __init__(self, have: int, why: str):
        super().__init__(why)
        self.have, self.why = have, why


def _stream(repo: RemoteRepo, f: RemoteFile, partial: Path, tracker: _Tracker,
            cancel: threading.Event | None) -> None:  # fmt: skip
    """Append the rest of the file to ``partial`` (a range request when it has bytes)."""
    import httpx2
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    have = partial.stat().st_size if partial.is_file() else 0
    if have > f.size:  # not this file's bytes: start over
        partial.unlink()
        have = 0
    if have == f.size:
        return
    resumed = have
    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"  # sizes must be the file's own
    if have:
        headers["Range"] = f"bytes={have}-"
    url = hf_hub_url(repo.repo_id, f.name, revision=repo.commit, endpoint=endpoint())
    try:
        with get_session().stream("GET", url, headers=headers, timeout=TIMEOUT_S) as r:
            with hub_errors(repo.repo_id, repo.revision):
                hf_raise_for_status(r)
            if have and not _resumes_at(r, have):  # the range was ignored: start over
                have = resumed = 0
            partial.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "ab" if have else "wb") as out:
                for chunk in r.iter_bytes():  # as it arrives: a cut loses nothing
                    out.write(chunk)
                    first = have == resumed
                    have += len(chunk)
                    tracker.report(f, have, resumed, force=first)
                    if cancel is not None and cancel.is_set() and have < f.size:
                        raise DownloadCancelled(
                            f"{repo.repo_id}: download cancelled in {f.name} at {have:,} of "
                            f"{f.size:,} bytes; the part downloaded is kept: run it again to resume"
                        )
    except httpx2.TransportError as e:
        raise _Cut(have, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None
    if have < f.size:
        raise _Cut(have, "the connection closed early")


def _resumes_at(response: object, offset: int) -> bool:
    """A 206 whose Content-Range starts where the partial file ends."""
    if getattr(response, "status_code", 0) != 206:
        return False
    value = response.headers.get("Content-Range", "")  # type: ignore[attr-defined]
    return value.startswith(f"bytes {offset}-")


def _verify(repo: RemoteRepo, f: RemoteFile, partial: Path) -> None:
    """Size, and sha256 for LFS files; a mismatch deletes the partial (it cannot resume)."""
    size = partial.stat().st_size
    problem = ""
    if size != f.size:
        problem = f"{size:,} bytes, the Hub lists {f.size:,}"
    elif f.lfs:
        h = hashlib.sha256()
        with open(partial, "rb") as fh:
            for block in iter(lambda: fh.read(BLOCK_BYTES), b""):
                h.update(block)
        if h.hexdigest() != f.etag:
            problem = f"sha256 {h.hexdigest()[:12]}…, the Hub lists {f.etag[:12]}…"
    if problem:
        partial.unlink()
        raise HubError(
            f"{repo.repo_id}/{f.name}: the downloaded file is damaged ({problem}); it was "
            "discarded and nothing entered the cache: run the download again"
        )


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _link(blob: Path, pointer: Path) -> None:
    """snapshots/<commit>/<name> -> ../../blobs/<etag>, as huggingface_hub lays it out."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), tmp)
    except OSError:  # no symlinks (some Windows setups): a copy, as huggingface_hub does
        import shutil

        shutil.copyfile(blob, tmp)
    os.replace(tmp, pointer)
