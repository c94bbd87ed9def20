"""The worker's file cache: files arrive in chunks, are verified by sha256, kept by hash.

Names are plain file names chosen by a remote caller, so anything that could leave the
worker's folder (a slash, '..', an absolute path) is refused before it touches the disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.worker.errors import InvalidRequest

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_FILE_BYTES = 512 * 1024**3  # a refusal point for runaway streams, far above real models


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
    """Content-addressed files under ``root/files/<sha256>/<name>``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.files = self.root / "files"
        self.files.mkdir(parents=True, exist_ok=True)

    def path_of(self, sha256: str) -> Path | None:
        """The cached file with this hash, or None."""
        folder = self.files / check_sha256(sha256)
        if not folder.is_dir():
            return None
        names = [p for p in folder.iterdir() if not p.name.startswith(".")]
        return names[0] if names else None

    def has(self, sha256: str) -> bool:
        return self.path_of(sha256) is not None

    def receive(self, pieces: Iterable[Piece]) -> tuple[str, int]:
        """Write a chunked stream, verify its hash, keep it; return (sha256, size)."""
        h = hashlib.sha256()
        size = 0
        tmp: Path | None = None
        out = None
        expected = name = ""
        try:
            for piece in pieces:
                if out is None:
                    expected, name = check_sha256(piece.sha256), check_name(piece.name)
                    tmp = self.files / f".incoming-{expected}-{os.getpid()}-{id(piece)}"
                    out = open(tmp, "wb")  # noqa: SIM115 - closed in finally
                elif piece.sha256 != expected or piece.name != name:
                    raise InvalidRequest(f"{name}: every chunk must carry the same sha256 and name")
                if piece.offset != size:
                    raise InvalidRequest(f"{name}: chunk at offset {piece.offset}, expected {size}")
                size += len(piece.data)
                if size > MAX_FILE_BYTES:
                    raise InvalidRequest(f"{name}: larger than {MAX_FILE_BYTES} bytes")
                h.update(piece.data)
                out.write(piece.data)
                if piece.last:
                    break
            if out is None or tmp is None:
                raise InvalidRequest("PutFile: the stream held no chunks")
            out.close()
            actual = h.hexdigest()
            if actual != expected:
                raise InvalidRequest(
                    f"{name}: sha256 mismatch (sent {expected}, received {actual})"
                )
            folder = self.files / expected
            folder.mkdir(exist_ok=True)
            os.replace(tmp, folder / name)
            tmp = None
            log.info("stored %s (%d bytes, sha256 %s)", name, size, expected[:12])
            return expected, size
        finally:
            if out is not None and not out.closed:
                out.close()
            if tmp is not None and tmp.exists():
                tmp.unlink()

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
