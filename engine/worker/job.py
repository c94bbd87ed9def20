"""JobRunner: the worker's plain-function API (the gRPC servicer only translates to it).

It enforces the order of calls (SetupJob before Step, one call at a time) with messages that
say what to call first, and owns what outlives a job: the file cache and the collective
mailbox that peers push into.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.worker.errors import InvalidRequest, OutOfOrder
from engine.worker.files import FileStore, check_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SetupResult:
    train_items: int
    trainable_params: int
    message: str


@dataclass(frozen=True)
class StepResult:
    step: int
    loss_sum: float
    tokens: int
    grad_norm: float
    compute_s: float
    comm_s: float
    peak_memory_bytes: float
    skipped: bool
    loss_scale: float


class JobRunner:
    """At most one job at a time; every public method is safe to call from gRPC threads."""

    def __init__(self, data_dir: str | Path):
        from engine.dist.mailbox import Mailbox  # pure Python; peers push chunks into it

        self.data_dir = Path(data_dir)
        self.store = FileStore(self.data_dir)
        self.mailbox = Mailbox()
        self._lock = threading.Lock()
        self._job: Any = None  # engine.worker.training.TrainingJob once set up
        self._rows: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=10_000)

    # ---- life cycle ----------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._job is not None

    def collective_servicer(self) -> Any:
        """The Collective servicer feeding this runner's mailbox (hosted by the server)."""
        from engine.rpc.collective_service import CollectiveServicer

        return CollectiveServicer(self.mailbox)

    def _need_job(self, call: str) -> Any:
        if self._job is None:
            raise OutOfOrder(f"{call}: no job is set up on this worker; call SetupJob first")
        return self._job

    # ---- calls ---------------------------------------------------------------------------
    def setup(
        self, job_toml: str, rank: int, world: int, peers: list[str], files: dict[str, str],
        run_id: str = "", group_token: str = "", mlx_hostfile: str = "",
    ) -> SetupResult:  # fmt: skip
        if not 0 <= rank < world:
            raise InvalidRequest(f"rank {rank}: expected 0 <= rank < world_size ({world})")
        if world > 1 and len(peers) != world:
            raise InvalidRequest(
                f"peers: expected {world} addresses (one per rank), got {len(peers)}"
            )
        if world > 1 and not group_token:
            raise InvalidRequest("group_token: required when world_size > 1")
        if not self._lock.acquire(blocking=False):
            raise OutOfOrder("SetupJob: another call is running on this worker")
        try:
            if self._job is not None:
                self._job.close()
                self._job = None
            from engine.worker.training import TrainingJob  # imports MLX; keep Describe cheap

            # one folder per process and rank: workers on one machine may share data_dir
            job_dir = (
                self.data_dir / "jobs" / f"{check_name(run_id or 'run')}.rank{rank}.{os.getpid()}"
            )
            paths = self.store.materialize(files, job_dir)
            self.mailbox.set_token(group_token)
            self._job = TrainingJob.build(
                job_toml,
                rank,
                world,
                peers,
                paths,
                self.mailbox,
                group_token,
                mlx_hostfile,
                job_dir,
            )
            info = self._job.describe()
            self._rows.put_nowait({"kind": "log", "level": "info", "message": info.message})
            return info
        finally:
            self._lock.release()

    def _locked(self, call: str, fn: Callable[[Any], Any]) -> Any:
        if not self._lock.acquire(timeout=5.0):
            raise OutOfOrder(f"{call}: another call is still running on this worker")
        try:
            return fn(self._need_job(call))
        finally:
            self._lock.release()

    def step(self, step: int, lr: float) -> StepResult:
        if step < 0 or not np.isfinite(lr) or lr < 0:
            raise InvalidRequest(
                f"Step: expected step >= 0 and a finite learning rate >= 0, got {step}, {lr}"
            )
        return self._locked("Step", lambda job: job.step(step, lr))

    def evaluate(self, step: int, max_batches: int) -> tuple[float, int]:
        return self._locked("Evaluate", lambda job: job.evaluate(max_batches))

    def get_state(
        self, step: int, adapter: bool = False
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return self._locked(
            "GetState", lambda job: job.adapter_files() if adapter else job.get_state()
        )

    def put_state(self, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> int:
        return self._locked("PutState", lambda job: job.put_state(meta, tensors))

    def metric_rows(self, active: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        while active():
            try:
                yield self._rows.get(timeout=0.5)
            except queue.Empty:
                continue

    def stop(self, reason: str = "") -> None:
        """End the job (a collective waiting on peers fails at once). The process keeps
        serving: a local worker exits when its engine closes the lifeline."""
        log.info("stop requested%s", f": {reason}" if reason else "")
        self.mailbox.fail(RuntimeError(f"worker stopped ({reason or 'no reason given'})"))
        with self._lock:
            if self._job is not None:
                self._job.close()
                self._job = None

    def close(self) -> None:
        if self._job is not None:
            self._job.close()
            self._job = None
