"""How a client finds the engine process: a connection file in the per-user engine folder.

<engine dir>/engine.json   {"address", "key", "pid", "protocol_version", "started_at"} (0600)
<engine dir>/engine.sock   the Unix socket the engine serves on
<engine dir>/engine.lock   held (flock) by the live engine: one engine per folder
<engine dir>/engine.log    the engine process's log

The folder is ``$ORCHARD_ENGINE_DIR``, else ``$ORCHARD_HOME/engine`` (``~/.orchard/engine``),
created 0700, so only the user reaches the socket; the key in the file (sent with every call)
guards the channel as a Jupyter kernel's connection file does. Where the socket path would be
too long for the OS (about 104 bytes), the engine serves on 127.0.0.1 with the same key.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from engine.trust.files import private_dir, write_private

log = logging.getLogger(__name__)

DIR_ENV = "ORCHARD_ENGINE_DIR"
CONNECTION_FILE = "engine.json"
SOCKET_FILE = "engine.sock"
LOCK_FILE = "engine.lock"
LOG_FILE = "engine.log"
MAX_SOCKET_PATH = 100  # sun_path holds 104 bytes on macOS, 108 on Linux, with its NUL


def engine_dir() -> Path:
    """The per-user folder of the engine's connection file, socket and log."""
    explicit = os.environ.get(DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("ORCHARD_HOME", Path.home() / ".orchard")).expanduser() / "engine"


@dataclass(frozen=True)
class ConnectionInfo:
    address: str  # "unix:/path/engine.sock" or "127.0.0.1:<port>", as gRPC takes it
    key: str  # sent as x-orchard-token on every call
    pid: int
    protocol_version: str
    started_at: float


def listen_address(folder: Path) -> str:
    """The address to serve on: the folder's Unix socket, or 127.0.0.1 when its path is too long."""
    sock = folder.resolve() / SOCKET_FILE
    if len(str(sock).encode()) <= MAX_SOCKET_PATH:
        return f"unix:{sock}"
    log.info("%s is too long for a Unix socket; serving on 127.0.0.1 with the key", sock)
    return "127.0.0.1:0"


def write_connection(folder: Path, info: ConnectionInfo) -> Path:
    path = folder / CONNECTION_FILE
    write_private(path, json.dumps(asdict(info), indent=1).encode())
    return path


def read_connection(folder: Path | None = None) -> ConnectionInfo | None:
    """The connection file's contents; None when there is none or it cannot be read."""
    path = (folder or engine_dir()) / CONNECTION_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return ConnectionInfo(
            str(raw["address"]), str(raw["key"]), int(raw["pid"]),
            str(raw["protocol_version"]), float(raw["started_at"]),
        )  # fmt: skip
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring the engine connection file %s: %s", path, e)
        return None


def remove_connection(folder: Path, pid: int) -> None:
    """Remove the connection file if it is still this engine's (a newer engine may own it)."""
    info = read_connection(folder)
    if info is not None and info.pid == pid:
        (folder / CONNECTION_FILE).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EngineLock:
    """The folder's engine lock (flock): the kernel drops it when its holder dies."""

    def __init__(self, folder: Path):
        self.path = private_dir(folder) / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held while the engine lives
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        self._file = f
        return True

    def held_by_someone(self) -> bool:
        """True when another process holds the lock (an engine running or starting)."""
        if self.acquire():
            self.release()
            return False
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
