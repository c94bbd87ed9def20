"""The worker's file cache: files arrive in chunks, are verified by sha256, kept by hash.

Names are plain file names chosen by a remote caller, so anything that could leave the
worker's folder (a slash, '..', an absolute path) is refused before it touches the disk.
Bytes arrive over gRPC (PutFile, :meth:`FileStore.receive`) or the bulk socket
(engine/rpc/bulk.py); both write through :meth:`FileStore.begin` (engine/worker/incoming.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.worker.errors import InvalidRequest, OutOfOrder
from engine.worker.incoming import Incoming, make_folder

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_FILE_BYTES = 512 * 1024**3  # a refusal point for runaway streams, far above real models
PARTIALS = ".incoming"  # under files/: a dot name is never a sha256 folder
PARTIAL_TTL_S = 24 * 3600.0
SUPERSEDE_S = 10.0  # how long a new transfer waits for a cancelled one of the same file


def check_name(name: str) -> str:
    """Return ``name`` if it is a plain file name; raise InvalidRequest otherwise."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise InvalidRequest(f"file name {name!r}: expected a plain file name, not a path")
    if os.path.isabs(name) or ".." in name.split(os.sep):
        raise InvalidRequest(f"file name {name!r}: expected a plain file name, not a path")
    return name


def check_sha256(digest: str) -> str:
    if not _SHA256.match(digest or ""):
        raise InvalidRequest(f"sha256 {digest!r}: expected 64 lowercase hex digits")
    return digest


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Piece:
    """One chunk of a file stream, as plain data (the servicer converts FileChunk)."""

    sha256: str
    name: str
    offset: int
    data: bytes
    last: bool


class FileStore:
    """Content-addressed files under ``root/files/<sha256>/<name>``; files still arriving
    under ``root/files/.incoming/<sha256>.part`` (kept for a resume when a stream breaks)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.files = self.root / "files"
        self.partials = self.files / PARTIALS  # made while a transfer runs or a partial waits
        self.files.mkdir(parents=True, exist_ok=True)
        self._changed = threading.Condition()
        self._active: dict[str, Incoming] = {}  # sha256 -> the transfer writing its partial
        self._sweep_partials()

    def path_of(self, sha256: str) -> Path | None:
        """The cached file with this hash, or None."""
        folder = self.files / check_sha256(sha256)
        if not folder.is_dir():
            return None
        names = [p for p in folder.iterdir() if not p.name.startswith(".")]
        return names[0] if names else None

    def has(self, sha256: str) -> bool:
        return self.path_of(sha256) is not None

    def held(self, sha256: str) -> int:
        """Bytes of this file a broken stream left behind (0 if none): where a resume starts.
        0 too while another process of this machine writes it (a transfer here would then
        write its own copy from byte 0: see engine/worker/incoming.py)."""
        path = self.partials / f"{check_sha256(sha256)}.part"
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            if sha256 not in self._active:  # this process's own transfer: it gives way to a new one
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return 0
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def begin(self, sha256: str, name: str, offset: int = 0, size: int | None = None) -> Incoming:
        """Start receiving a file from byte ``offset`` (0, or up to the bytes held from a
        broken stream); ``size`` is the whole file's, when the sender announced it. A transfer
        of the same file still running is cancelled first (the newer one is the live one)."""
        check_sha256(sha256)
        check_name(name)
        limit = MAX_FILE_BYTES if size is None else size
        if not 0 <= limit <= MAX_FILE_BYTES:
            raise InvalidRequest(f"{name}: size {size}: expected 0 to {MAX_FILE_BYTES} bytes")
        with self._changed:
            old = self._active.get(sha256)
            if old is not None:
                old.cancel()
                if not self._changed.wait_for(lambda: sha256 not in self._active, SUPERSEDE_S):
                    raise OutOfOrder(f"{name}: another transfer of this file is still running")
            held = self.held(sha256)
            if not 0 <= offset <= min(held, limit):
                raise InvalidRequest(
                    f"{name}: chunk at offset {offset}, expected {min(held, limit)} or less "
                    "(the bytes of this file already held)"
                )
            make_folder(self.partials)  # even if someone emptied files/
            incoming = Incoming(
                sha256, name, self.partials / f"{sha256}.part", offset, limit,
                on_close=self._closed, publish=self._publish,
            )  # fmt: skip
            self._active[sha256] = incoming
        return incoming

    def _closed(self, incoming: Incoming) -> None:
        with self._changed:
            if self._active.get(incoming.sha256) is incoming:
                del self._active[incoming.sha256]
            if not self._active:
                with contextlib.suppress(OSError):  # not empty: a partial waits for a resume
                    self.partials.rmdir()
            self._changed.notify_all()

    def _publish(self, incoming: Incoming) -> Path:
        folder = self.files / incoming.sha256
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / incoming.name
        os.replace(incoming.partial, dest)
        log.info(
            "stored %s (%d bytes, sha256 %s)", incoming.name, incoming.size, incoming.sha256[:12]
        )
        return dest

    def receive(
        self, pieces: Iterable[Piece], on_cancel: Callable[[], None] | None = None
    ) -> tuple[str, int]:
        """Write a chunked stream, verify its hash, keep it; return (sha256, size).

        The first chunk may start past 0 to resume a broken stream (see :meth:`held`). A
        stream that ends before its last chunk keeps what it wrote for that resume."""
        stream = iter(pieces)
        piece = next(stream, None)
        if piece is None:
            raise InvalidRequest("PutFile: the stream held no chunks")
        incoming = self.begin(piece.sha256, piece.name, offset=piece.offset)
        if on_cancel is not None:  # a newer transfer of this file ends this stream
            incoming.on_cancel(on_cancel)
        keep = True  # a broken stream keeps its bytes; refused content does not
        try:
            while True:
                if piece.sha256 != incoming.sha256 or piece.name != incoming.name:
                    keep = False
                    raise InvalidRequest(
                        f"{incoming.name}: every chunk must carry the same sha256 and name"
                    )
                if piece.offset != incoming.size:
                    keep = False
                    raise InvalidRequest(
                        f"{incoming.name}: chunk at offset {piece.offset}, expected {incoming.size}"
                    )
                try:
                    incoming.write(piece.data)
                except InvalidRequest:
                    keep = False
                    raise
                if piece.last:
                    break
                piece = next(stream, None)
                if piece is None:
                    raise InvalidRequest(
                        f"{incoming.name}: the stream ended at byte {incoming.size} before its "
                        "last chunk (send the rest from that offset to resume)"
                    )
            return incoming.finish()
        finally:
            incoming.close(keep=keep)

    def _sweep_partials(self) -> None:
        """Partial files nobody resumed for a day are dropped: a worker's disk is not a bin."""
        cutoff = time.time() - PARTIAL_TTL_S
        for p in self.partials.glob("*.part"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass
        with contextlib.suppress(OSError):
            self.partials.rmdir()

    def materialize(self, files: dict[str, str], job_dir: str | Path) -> dict[str, Path]:
        """Lay out a job's files: role ``model/<name>`` goes to ``job_dir/model/<name>``.

        Other roles ("dataset", "valid") resolve to the cached file itself. Returns role -> path.
        """
        out: dict[str, Path] = {}
        job_dir = Path(job_dir)
        for role, digest in files.items():
            src = self.path_of(digest)
            if src is None:
                raise InvalidRequest(f"file for {role!r} (sha256 {digest[:12]}…) was never sent")
            kind, _, rest = role.partition("/")
            if kind == "model" and rest:
                dest = job_dir / "model" / check_name(rest)
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
                if tmp.is_symlink() or tmp.exists():
                    tmp.unlink()
                os.symlink(src.resolve(), tmp)
                os.replace(tmp, dest)  # atomic: a re-run of the same job just repoints it
                out[role] = dest
            elif not rest and kind in ("dataset", "valid"):
                out[role] = src
            else:
                raise InvalidRequest(
                    f"file role {role!r}: expected 'dataset', 'valid' or 'model/<file name>'"
                )
        return out
