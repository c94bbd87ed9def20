"""Start and stop worker processes on this machine (the embedded default cluster).

Each worker gets the run token on its stdin (never argv), keeps that pipe as its lifeline,
runs in its own session (a Ctrl-C in the terminal reaches only the engine, which then
checkpoints and stops the workers in order), and logs to a file in the run folder.
Workers can run at a lower CPU priority than the engine (``niceness``) so that, on a machine
whose cores they fill, the app's window and the coordinator still get the CPU when they need it.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import engine
from engine.rpc.auth import TOKEN_ENV
from engine.worker.agent import PARENT_PID_ENV, PORT_LINE
from engine.worker.blas import worker_env
from engine.worker.memory_guard import WORKERS_ENV

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
MAX_NICENESS = 19  # the lowest priority Unix offers


class WorkerStartError(RuntimeError):
    pass


@dataclass
class LocalWorker:
    proc: subprocess.Popen
    port: int
    log_path: Path
    stdin: IO[bytes] | None = field(repr=False, default=None)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid


def _read_port(proc: subprocess.Popen, log_path: Path, timeout_s: float) -> int:
    """Read the first stdout line (``ORCHARD_WORKER_PORT=<n>``) within ``timeout_s``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout_s
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WorkerStartError(
                f"worker pid {proc.pid} did not report its port within {timeout_s:.0f}s (log: {log_path})"
            )
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            piece = os.read(fd, 256)
            if not piece:
                code = proc.wait(timeout=5)
                tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
                raise WorkerStartError(
                    f"worker exited with code {code} before serving (log: {log_path}):\n{tail}"
                )
            buf += piece
    line = buf.split(b"\n", 1)[0].decode(errors="replace").strip()
    if not line.startswith(PORT_LINE) or not line[len(PORT_LINE) :].isdigit():
        raise WorkerStartError(
            f"worker pid {proc.pid}: expected '{PORT_LINE}<n>' first, got {line!r}"
        )
    return int(line[len(PORT_LINE) :])


def lower_priority(pid: int, niceness: int) -> int:
    """Run process group ``pid`` ``niceness`` steps below this process; returns its nice value.

    The group, not the process: on Linux a nice value belongs to each thread, and the group
    call reaches every thread the child has started so far (later ones inherit it). The
    child leads its own group (``start_new_session``), so nothing else is touched. On Linux
    with autogroup scheduling a new session is also a CPU group of its own that competes
    with the app's as an equal whatever its threads' nice values, so that group is lowered too.
    """
    target = min(MAX_NICENESS, os.getpriority(os.PRIO_PROCESS, 0) + niceness)
    try:
        os.setpriority(os.PRIO_PGRP, pid, target)
        autogroup = Path(f"/proc/{pid}/autogroup")
        if autogroup.exists():
            autogroup.write_text(f"{target}\n")
    except OSError as e:  # an exited child or a sandbox that forbids it: run at normal priority
        log.warning("could not lower the priority of worker pid %d to nice %d: %s", pid, target, e)
    return target


def start_local_worker(
    token: str,
    data_dir: Path,
    log_path: Path,
    workers_on_host: int = 1,
    timeout_s: float = START_TIMEOUT_S,
    niceness: int = 0,
) -> LocalWorker:
    """Spawn ``python -m engine.worker --local`` and wait until it reports its port.

    ``niceness`` (0..19) runs the worker that many nice steps below this process."""
    return start_local_workers(token, data_dir, [log_path], workers_on_host, timeout_s, niceness)[0]


def start_local_workers(
    token: str,
    data_dir: Path,
    log_paths: list[Path],
    workers_on_host: int = 1,
    timeout_s: float = START_TIMEOUT_S,
    niceness: int = 0,
) -> list[LocalWorker]:
    """One worker per log path: all spawned first, then each waited for, so their imports
    overlap (a group that re-forms in fresh processes waits for one start, not for each)."""
    pending = spawn_local_workers(token, data_dir, log_paths, workers_on_host, niceness)
    return await_local_workers(pending, timeout_s)


Pending = tuple[subprocess.Popen, Path]  # a spawned worker that has not reported its port yet


def spawn_local_workers(
    token: str, data_dir: Path, log_paths: list[Path], workers_on_host: int = 1,
    niceness: int = 0,
) -> list[Pending]:  # fmt: skip
    """Spawn one worker per log path and return at once (await_local_workers waits)."""
    if not 0 <= niceness <= MAX_NICENESS:
        raise ValueError(f"niceness is {niceness}; expected 0 to {MAX_NICENESS}")
    spawned: list[Pending] = []
    try:
        for log_path in log_paths:
            spawned.append((_spawn(token, data_dir, log_path, workers_on_host, niceness), log_path))
    except BaseException:
        for proc, _ in spawned:
            _kill(proc)
        raise
    return spawned


def await_local_workers(
    pending: list[Pending], timeout_s: float = START_TIMEOUT_S
) -> list[LocalWorker]:
    """Each spawned worker once it reports its port (all are killed if one fails)."""
    try:
        out = []
        for proc, log_path in pending:
            port = _read_port(proc, log_path, timeout_s)
            log.info("local worker pid %d on 127.0.0.1:%d (log %s)", proc.pid, port, log_path)
            out.append(LocalWorker(proc=proc, port=port, log_path=log_path, stdin=proc.stdin))
        return out
    except BaseException:
        for proc, _ in pending:
            _kill(proc)
        raise


def _spawn(
    token: str, data_dir: Path, log_path: Path, workers_on_host: int, niceness: int
) -> subprocess.Popen:
    root = str(Path(engine.__file__).resolve().parent.parent)
    env = worker_env(os.environ, workers_on_host)
    env[PARENT_PID_ENV] = str(os.getpid())
    env[WORKERS_ENV] = str(workers_on_host)  # the worker's memory guard shares the machine out
    env.pop(TOKEN_ENV, None)  # the token goes through stdin only
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.worker", "--local", "--data-dir", str(data_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, env=env,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if niceness:  # before the worker imports MLX and starts its compute threads
            lower_priority(proc.pid, niceness)
        proc.stdin.write(token.encode() + b"\n")
        proc.stdin.flush()
    except BaseException:
        _kill(proc)
        raise
    return proc


def discard_pending(pending: list[Pending]) -> None:
    """Kill spawned workers that no run took (they hold no job) and reap them."""
    for proc, _ in pending:
        _kill(proc)


def kill_local_workers(workers: list[LocalWorker]) -> None:
    """SIGKILL every worker at once (their state is not needed: a re-form from a snapshot),
    then reap them: no grace to wait out for a process stuck in a C++ collective."""
    for w in workers:
        if w.proc.poll() is None:
            w.proc.kill()
    for w in workers:
        _kill(w.proc)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass


def stop_local_workers(workers: list[LocalWorker], grace_s: float = 10.0) -> None:
    """Close each lifeline (the worker exits at once), then terminate/kill what remains."""
    for w in workers:
        if w.stdin is not None:
            try:
                w.stdin.close()
            except OSError:
                pass
    deadline = time.monotonic() + grace_s
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker pid %d did not exit in %.0fs; terminating", w.pid, grace_s)
            w.proc.terminate()
            try:
                w.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        _kill(w.proc)
