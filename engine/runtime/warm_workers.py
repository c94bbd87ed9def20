"""Local workers spawned before their run exists, so their start overlaps the preflight.

A local worker's first seconds go to importing the training stack (MLX, mlx-lm, the
tokenizer's libraries: about 3 s of CPU, engine/worker/spare.py; 11.5 s of wall time on the
H100 machine bench/gpu/run.sh runs on). The command's preflight imports the same stack and
reads the dataset (13.5 s there), and only then would the run spawn its workers: the two
imports ran one after the other. ``WarmWorkers.spawn(job)`` starts the job's local workers first. The run adopts them
(``Cluster.start``) when its job still asks for as many at the same niceness; otherwise, and
when the preflight refuses, ``close()`` ends them. They hold no job until the run's SetupJob,
so ending them loses nothing.

Each worker logs to a file in a hidden folder of ``run.out_dir``; on adoption the file is
hard-linked into the run folder as ``workers/workerN.log`` (same file system, the same open
file) and the hidden folder goes. The spawning thread must outlive the run: a local worker
ends with the thread that started it (its parent-death signal).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from engine.config import JobSpec
from engine.rpc.auth import new_token
from engine.runtime.local_workers import Pending, discard_pending, spawn_local_workers
from engine.worker.agent import default_data_dir

log = logging.getLogger(__name__)

PREFIX = ".orchard-starting-"
STALE_S = 3600.0  # a hidden folder this old was left by a command killed before its run


class WarmWorkers:
    """``count`` local worker processes for a run not yet started (see the module doc)."""

    def __init__(self, count: int, niceness: int, out_dir: Path, data_dir: Path | None = None,
                 run_dir: Path | None = None):  # fmt: skip
        """``run_dir``: the run folder when it exists already (a resume): the logs go
        straight to its ``workers/`` (appended, as the run's own workers' would be)."""
        self.count, self.niceness = count, niceness
        self.data_dir = data_dir or default_data_dir()
        self.token = new_token()
        self._root: Path | None = None  # an out_dir this made: removed again if nothing ran
        self._dir: Path | None = None  # the hidden folder of the logs, until a run takes them
        if run_dir is not None:
            logs_dir = run_dir / "workers"
        else:
            if not out_dir.exists():
                out_dir.mkdir(parents=True)
                self._root = out_dir
            _remove_stale(out_dir)
            logs_dir = self._dir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=out_dir))
        logs = [logs_dir / f"worker{i}.log" for i in range(count)]
        self._pending: list[Pending] = spawn_local_workers(
            self.token, self.data_dir, logs, workers_on_host=count, niceness=niceness
        )

    @classmethod
    def spawn(cls, job: JobSpec, data_dir: Path | None = None,
              run_dir: Path | None = None) -> WarmWorkers | None:  # fmt: skip
        """The job's local workers, started now; None for a job on remote hosts (or when
        they cannot start here: the run then starts its own, and says why)."""
        if job.dist.hosts:
            return None
        try:
            out_dir = Path(job.run.out_dir).expanduser().resolve()
            return cls(job.dist.workers, job.dist.worker_niceness, out_dir, data_dir, run_dir)
        except (OSError, ValueError) as e:
            log.info("local workers not started ahead of the run: %s", e)
            return None

    def fits(self, job: JobSpec, data_dir: Path) -> bool:
        d = job.dist
        return (
            bool(self._pending)
            and not d.hosts
            and d.workers == self.count
            and d.worker_niceness == self.niceness
            and data_dir == self.data_dir
        )

    def take(self, workers_dir: Path) -> list[Pending]:
        """The spawned workers for a run whose worker logs go in ``workers_dir``
        (``worker0.log``...): once only; afterwards close() leaves them running."""
        pending, self._pending = self._pending, []
        if self._dir is None:  # logging into the run folder already
            return pending
        workers_dir.mkdir(parents=True, exist_ok=True)
        moved = []
        for i, (proc, old) in enumerate(pending):
            new = workers_dir / f"worker{i}.log"
            try:
                os.link(old, new)  # the worker keeps writing to the same file
                old.unlink()
            except OSError as e:
                log.info("worker %d keeps its log at %s (%s)", i, old, e)
                new = old
            moved.append((proc, new))
        self._remove_dir()
        return moved

    def close(self) -> None:
        """End workers no run adopted (a refused preflight, an error); idempotent."""
        pending, self._pending = self._pending, []
        if pending:
            discard_pending(pending)
            self._remove_dir(logs_too=True)  # no run: their start-up lines are nobody's

    def _remove_dir(self, logs_too: bool = False) -> None:
        if self._dir is None or (not logs_too and any(self._dir.glob("*"))):
            return  # a log that could not move to its run folder stays
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None
        if self._root is not None:
            try:
                self._root.rmdir()  # the out_dir this made, when no run came to use it
            except OSError:
                pass
            self._root = None


def _remove_stale(out_dir: Path) -> None:
    """Hidden log folders of commands killed (kill -9) between spawning and their run."""
    now = time.time()
    for old in out_dir.glob(f"{PREFIX}*"):
        try:
            if now - old.stat().st_mtime > STALE_S:
                shutil.rmtree(old)
        except OSError:
            pass
