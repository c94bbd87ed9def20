"""The worker's file cache: files arrive in chunks, are verified, kept by sha256.

Names are plain file names chosen by a remote caller, so anything that could leave the
worker's folder (a slash, '..', an absolute path) is refused before it touches the disk.
Bytes arrive over gRPC (PutFile, :meth:`FileStore.receive`) or the bulk socket
(engine/rpc/bulk.py); both write through :meth:`FileStore.begin` (engine/worker/incoming.py).

A file whose sha256 the worker checked itself (PutFile) is kept under ``files/<sha256>/``, held
for every caller. One checked against the xxh3-128 checksum its coordinator sent with the
sha256 (the bulk socket, engine/worker/checksum.py) is kept on that caller's word, under
``files/.vouched/<caller>/<sha256>/``: held for that caller only, so one paired coordinator
can never put bytes under a sha256 that another one's jobs then load (that one ships its own
copy). A caller is a paired coordinator's client id, or "" for a local worker's token holder.
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
VOUCHED = ".vouched"  # under files/: files kept on a caller's word, one folder per caller
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

    def path_of(self, sha256: str, caller: str = "") -> Path | None:
        """The cached file with this hash that ``caller``'s jobs may load: one whose sha256
        this worker checked, else one kept on that caller's own word; None if neither."""
        check_sha256(sha256)
        for folder in (self.files / sha256, self.vouched(caller) / sha256):
            if folder.is_dir():
                names = [p for p in folder.iterdir() if not p.name.startswith(".")]
                if names:
                    return names[0]
        return None

    def has(self, sha256: str, caller: str = "") -> bool:
        return self.path_of(sha256, caller) is not None

    def vouched(self, caller: str) -> Path:
        """The folder of the files kept on ``caller``'s word (named by a hash of the caller:
        a client id is any string)."""
        key = hashlib.sha256(caller.encode()).hexdigest()[:16]
        return self.files / VOUCHED / key

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

    def begin(
        self, sha256: str, name: str, offset: int = 0, size: int | None = None,
        checksum: str | None = None, caller: str = "", checksum_at_end: bool = False,
    ) -> Incoming:  # fmt: skip
        """Start receiving a file from byte ``offset`` (0, or up to the bytes held from a
        broken stream); ``size`` is the whole file's, when the sender announced it. A transfer
        of the same file still running is cancelled first (the newer one is the live one).
        ``checksum``: the xxh3-128 hex digest to check the whole file against instead of its
        sha256; the file is then kept as ``caller``'s (see the module's docstring).
        ``checksum_at_end``: that checksum comes after the bytes (Incoming's)."""
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
                on_close=self._closed, publish=self._publish, checksum=checksum, caller=caller,
                checksum_at_end=checksum_at_end,
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
        checked = incoming.checksum is None  # the worker checked the sha256 itself
        top = self.files if checked else self.vouched(incoming.caller)
        folder = top / incoming.sha256
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / incoming.name
        os.replace(incoming.partial, dest)
        log.info(
            "stored %s (%d bytes, sha256 %s%s)", incoming.name, incoming.size,
            incoming.sha256[:12], "" if checked else ", by its xxh3-128: the caller's word",
        )  # fmt: skip
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

    def materialize(
        self, files: dict[str, str], job_dir: str | Path, caller: str = ""
    ) -> dict[str, Path]:
        """Lay out a job's files: role ``model/<name>`` goes to ``job_dir/model/<name>``.

        Other roles ("dataset", "valid") resolve to the cached file itself. Only files held
        for ``caller`` (see :meth:`path_of`) count. Returns role -> path.
        """
        out: dict[str, Path] = {}
        job_dir = Path(job_dir)
        for role, digest in files.items():
            src = self.path_of(digest, caller)
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
