"""Test helpers: a private engine folder per test, and the end of any engine started in it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from engine.service.connection import DIR_ENV, EngineLock, pid_alive, read_connection
from engine.service.process import IDLE_ENV


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def end_engine(folder: Path, grace_s: float = 10.0) -> None:
    """Let an engine started in ``folder`` exit by itself (a released, idle one does at once);
    else SIGTERM (stop with a checkpoint), then SIGKILL (its workers follow by their lifeline)."""
    deadline = time.monotonic() + 5.0
    info = read_connection(folder)
    while info is None and EngineLock(folder).held_by_someone() and time.monotonic() < deadline:
        time.sleep(0.05)  # one is starting: its connection file comes next
        info = read_connection(folder)
    if info is None or info.pid == os.getpid() or wait_gone(info.pid, grace_s):
        return  # (an engine served from the test process itself is the test's to stop)
    for sig, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, sig)
        if wait_gone(info.pid, wait_s):
            return


@contextlib.contextmanager
def isolated_engine_dir(monkeypatch) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="oe-", dir="/tmp"))
    monkeypatch.setenv(DIR_ENV, str(folder))
    monkeypatch.setenv(IDLE_ENV, "3")  # an engine left idle by a test exits soon by itself
    try:
        yield folder
    finally:
        end_engine(folder)
        shutil.rmtree(folder, ignore_errors=True)
