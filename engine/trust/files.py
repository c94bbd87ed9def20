"""Private files: secrets are written atomically and readable by their owner only (0600)."""

from __future__ import annotations

import fcntl
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".lock"


def private_dir(path: Path) -> Path:
    """Create ``path`` (0700) if needed; an existing folder keeps its mode."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically (a reader never sees half a key)."""
    private_dir(path.parent)
    # unique per writer: two threads (or processes) writing one file never share a tmp file
    tag = f"{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(4)}"
    tmp = path.with_name(f".{path.name}.tmp{tag}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # umask cannot widen it, but an old tmp file might have
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock (an exclusive ``flock`` on ``folder/.lock``) for a
    read-check-write: making an identity or id once, or a store's read-modify-write. It
    excludes other processes and other threads alike (each call opens the file anew, and
    flock locks belong to the open file), so two pairings at once neither make two
    identities nor lose each other's peer."""
    private_dir(folder)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def default_data_dir() -> Path:
    """Where this machine keeps its identity, code and paired peers: $ORCHARD_HOME/trust
    (default ~/.orchard/trust, beside the worker's ~/.orchard/worker)."""
    return Path(os.environ.get("ORCHARD_HOME", Path.home() / ".orchard")) / "trust"
