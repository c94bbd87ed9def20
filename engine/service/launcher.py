"""For clients: find the running engine from its connection file, or start one.

The engine is started detached (a session of its own, stdin closed, its log in the engine
folder), so the client that started it may exit or crash without touching it.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import engine
from engine.config import DEMO_DATASET, DEMO_MODEL, JobSpec
from engine.rpc.auth import TOKEN_ENV
from engine.rpc.engine_client import EngineClient, EngineUnavailable
from engine.service.connection import (
    LOG_FILE,
    EngineLock,
    engine_dir,
    pid_alive,
    read_connection,
)
from engine.service.info import ENGINE_PROTOCOL_VERSION
from engine.service.process import EXIT_LOCKED, READY_LINE
from engine.trust.files import private_dir

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
LOG_KEEP_BYTES = 5 * 1024 * 1024  # past this, a new engine starts a fresh log (one old kept)
PROBE_TIMEOUT_S = 3.0


class EngineStartError(RuntimeError):
    pass


def find_engine(
    folder: Path | None = None, timeout_s: float = PROBE_TIMEOUT_S
) -> EngineClient | None:
    """A client of the engine named by the connection file, if that engine answers."""
    info = read_connection(folder or engine_dir())
    if info is None or not pid_alive(info.pid):
        return None
    if info.protocol_version != ENGINE_PROTOCOL_VERSION:
        raise EngineStartError(
            f"the running engine (pid {info.pid}) speaks engine protocol {info.protocol_version}, "
            f"this Orchard speaks {ENGINE_PROTOCOL_VERSION}: stop it (kill {info.pid}) or update"
        )
    client = EngineClient(info.address, info.key)
    try:
        client.status(timeout_s)
    except EngineUnavailable:
        client.close()
        return None
    return client


def _spawn(folder: Path, idle_exit_s: float | None) -> subprocess.Popen:
    root = str(Path(engine.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env.pop(TOKEN_ENV, None)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "engine.service", "--dir", str(folder)]
    if idle_exit_s is not None:
        cmd += ["--idle-exit-s", str(idle_exit_s)]
    log_path = folder / LOG_FILE
    if log_path.is_file() and log_path.stat().st_size > LOG_KEEP_BYTES:
        log_path.replace(log_path.with_name(LOG_FILE + ".1"))
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file, env=env,
            cwd=str(Path.home()), start_new_session=True, close_fds=True,
        )  # fmt: skip
    # Reap it when it exits while this client lives (no zombie); a client that exits first
    # leaves it to init.
    threading.Thread(target=proc.wait, name="engine-reaper", daemon=True).start()
    return proc


def _await_ready(proc: subprocess.Popen, folder: Path, deadline: float) -> bool:
    """True once the engine printed its ready line; False if it exited (EXIT_LOCKED: another
    engine holds the folder)."""
    assert proc.stdout is not None
    fd, buf = proc.stdout.fileno(), b""
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise EngineStartError(
                    f"the engine (pid {proc.pid}) did not start within {START_TIMEOUT_S:.0f}s; "
                    f"see {folder / LOG_FILE}"
                )
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                piece = os.read(fd, 256)
                if not piece:
                    code = proc.wait(timeout=10)
                    if code == EXIT_LOCKED:
                        return False
                    raise EngineStartError(
                        f"the engine exited with code {code} before serving; see {folder / LOG_FILE}"
                    )
                buf += piece
    finally:
        proc.stdout.close()
    return buf.startswith(READY_LINE.encode())


def connect_engine(
    folder: Path | None = None, start: bool = True, idle_exit_s: float | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> EngineClient | None:  # fmt: skip
    """The running engine, or (with ``start``) a new one; None when none runs and not ``start``.
    Two clients starting at once get the same engine: the folder's lock admits one."""
    folder = private_dir((folder or engine_dir()).expanduser())
    deadline = time.monotonic() + timeout_s
    while True:
        client = find_engine(folder)
        if client is not None or not start:
            return client
        if time.monotonic() > deadline:
            raise EngineStartError(f"no engine answered in {folder} within {timeout_s:.0f}s")
        if EngineLock(folder).held_by_someone():  # one is starting (or exiting): wait for it
            time.sleep(0.1)
            continue
        proc = _spawn(folder, idle_exit_s)
        if _await_ready(proc, folder, deadline):
            log.info("started the engine process (pid %d) in %s", proc.pid, folder)


def job_toml_for_engine(job: JobSpec, cwd: Path | None = None) -> str:
    """The job as TOML with its local paths made absolute: the engine's folder is not the client's."""
    cwd = cwd or Path.cwd()
    copy = JobSpec.from_toml(job.to_toml(), source="job")
    copy.run.out_dir = str((cwd / Path(copy.run.out_dir).expanduser()).resolve())
    for spec, sentinel in ((copy.model, DEMO_MODEL), (copy.data, DEMO_DATASET)):
        path = Path(spec.path).expanduser()
        if spec.path and spec.path != sentinel and not path.is_absolute() and (cwd / path).exists():
            spec.path = str((cwd / path).resolve())
    return copy.to_toml()
