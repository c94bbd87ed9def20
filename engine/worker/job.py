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

    def __init__(
        self,
        data_dir: str | Path,
        on_busy: Callable[[bool], None] | None = None,
        confine_paths: bool = False,
        job_process: bool = False,
    ):
        """``on_busy(True/False)`` is called when a job is set up / ends (the agent
        re-advertises its state); it must not block. ``confine_paths`` (network workers):
        a job may only read files the coordinator shipped (engine/worker/confine.py).
        ``job_process``: each job runs in a child process (engine/worker/job_process.py)."""
        from engine.dist.mailbox import Mailbox  # pure Python; peers push chunks into it
        from engine.worker.job_process import ForwardingMailbox

        self.data_dir = Path(data_dir)
        self.store = FileStore(self.data_dir)
        self.job_process = job_process
        self.mailbox = ForwardingMailbox() if job_process else Mailbox()
        self._lock = threading.Lock()
        self._job: Any = None  # engine.worker.training.TrainingJob once set up
        self._rows: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=10_000)
        self._on_busy = on_busy
        self.confine_paths = confine_paths

    def _tell_busy(self, busy: bool) -> None:
        if self._on_busy is not None:
            try:
                self._on_busy(busy)
            except Exception:  # noqa: BLE001 - an advertisement must never fail a job call
                log.warning("busy/idle callback failed", exc_info=True)

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
        peer_certs: list[str] | None = None,
    ) -> SetupResult:  # fmt: skip
        if not 0 <= rank < world:
            raise InvalidRequest(f"rank {rank}: expected 0 <= rank < world_size ({world})")
        if world > 1 and len(peers) != world:
            raise InvalidRequest(
                f"peers: expected {world} addresses (one per rank), got {len(peers)}"
            )
        if world > 1 and not group_token:
            raise InvalidRequest("group_token: required when world_size > 1")
        if peer_certs and len(peer_certs) != len(peers):
            raise InvalidRequest(
                f"peer_certs: expected {len(peers)} certificates (one per rank), got {len(peer_certs)}"
            )
        if self.confine_paths:
            from engine.worker.confine import check_confined

            check_confined(job_toml, files)
        if not self._lock.acquire(blocking=False):
            raise OutOfOrder("SetupJob: another call is running on this worker")
        try:
            if self._job is not None:
                self._job.close()
                self._job = None
            # one folder per process and rank: workers on one machine may share data_dir
            job_dir = (
                self.data_dir / "jobs" / f"{check_name(run_id or 'run')}.rank{rank}.{os.getpid()}"
            )
            paths = self.store.materialize(files, job_dir)
            self.mailbox.set_token(group_token)
            args = dict(
                job_toml=job_toml, rank=rank, world=world, peers=peers, paths=paths,
                group_token=group_token, mlx_hostfile=mlx_hostfile, job_dir=job_dir,
                peer_certs=peer_certs or [],
            )  # fmt: skip
            if self.job_process:
                from engine.worker.job_process import ProcessJob

                self._job = ProcessJob.start(self.mailbox, args)
            else:
                from engine.worker.training import TrainingJob  # imports MLX

                self._job = TrainingJob.build(mailbox=self.mailbox, **args)
            info = self._job.describe()
            self._rows.put_nowait({"kind": "log", "level": "info", "message": info.message})
            return info
        finally:
            self._lock.release()
            self._tell_busy(self._job is not None)

    def _locked(self, call: str, fn: Callable[[Any], Any]) -> Any:
        from engine.worker.job_process import JobCrashed

        if not self._lock.acquire(timeout=5.0):
            raise OutOfOrder(f"{call}: another call is still running on this worker")
        try:
            return fn(self._need_job(call))
        except JobCrashed:
            log.error("%s: the job process died; the worker forgets the job", call)
            self._job.close()
            self._job = None
            self._tell_busy(False)
            raise
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
                self._tell_busy(False)

    def close(self) -> None:
        if self._job is not None:
            self._job.close()
            self._job = None
            self._tell_busy(False)
