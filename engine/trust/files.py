"""Private files: secrets are written atomically and readable by their owner only (0600)."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """Create ``path`` (0700) if needed; an existing folder keeps its mode."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically (a reader never sees half a key)."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
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


def default_data_dir() -> Path:
    """Where this machine keeps its identity, code and paired peers: $ORCHARD_HOME/trust
    (default ~/.orchard/trust, beside the worker's ~/.orchard/worker)."""
    return Path(os.environ.get("ORCHARD_HOME", Path.home() / ".orchard")) / "trust"
