"""JobRunner: the worker's plain-function API (the gRPC servicer only translates to it).

It enforces the order of calls (SetupJob before Step, one call at a time) with messages that
say what to call first, and owns what outlives a job: the file cache, the collective mailbox
that peers push into, and the port held for MLX's ring (ring_port.py). Each job gets an id
at SetupJob; a call carrying another job's id is refused (JobLost, or OutOfOrder after that
job's own Stop) and a Stop carrying one is ignored, so a stale call from a dead
coordinator's run never touches a newer job.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.worker.errors import InvalidRequest, JobLost, OutOfOrder, PeerFailed
from engine.worker.files import FileStore, check_name
from engine.worker.orphans import CallTicket, OrphanGuard
from engine.worker.ring_port import RingPort

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SetupResult:
    train_items: int
    trainable_params: int
    message: str
    job_id: str = ""  # made by the worker at SetupJob; later calls carry it (stale ones fail)


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
    work_tokens: int = 0  # tokens computed, padding included: the balancer's unit of work
    grad_s: float = 0.0  # seconds computing the gradients, before any communication
    comm_hidden_s: float = 0.0  # collective time that ran while the step computed
    group_loss_sum: float = 0.0  # the whole group's, combined with the gradients
    group_tokens: int = 0


ENDED_KEPT = 64  # ended jobs whose reason a late call still gets told
CALL_WAIT_S = 5.0  # a call waits this long for the one before it (e.g. one still unwinding)
# Stop on a job process: a call still running this long after the collective was failed is
# stuck where nothing reaches it (MLX's own collective), so the process is killed.
STOP_GRACE_S = 2.0
# Regroup waits this long for the step in flight to unwind: one that is computing (not
# waiting on the lost peer) only fails at its next collective
REGROUP_WAIT_S = 60.0


@dataclass(frozen=True)
class _Group:
    """The group this worker's job is in, as SetupJob or the last Regroup said: how it
    reaches its peers (PullState fetches from them as the collectives send to them)."""

    rank: int
    peers: list[str]
    peer_certs: list[str]
    token: str


@dataclass(frozen=True)
class _Ended:
    reason: str
    stopped: bool  # by its own coordinator's Stop (a later call is out of order, not lost)


class JobRunner:
    """At most one job at a time; every public method is safe to call from gRPC threads."""

    def __init__(
        self,
        data_dir: str | Path,
        on_busy: Callable[[bool], None] | None = None,
        confine_paths: bool = False,
        job_process: bool = False,
        job_lease_s: float | None = None,
        warm_spare: bool = True,
    ):
        """``on_busy(True/False)`` is called when a job is set up / ends (the agent
        re-advertises its state); it must not block. ``confine_paths`` (network workers):
        a job may only read files the coordinator shipped (engine/worker/confine.py).
        ``job_process``: each job runs in a child process (engine/worker/job_process.py),
        taken from a warm spare that imported the training stack ahead (worker/spare.py)
        unless ``warm_spare`` is false (then each SetupJob spawns and imports its own).
        ``job_lease_s`` (network workers): end a job whose coordinator is gone
        (engine/worker/orphans.py); None: never (local workers die with their engine)."""
        from engine.dist.mailbox import Mailbox  # pure Python; peers push chunks into it
        from engine.worker.job_process import ForwardingMailbox

        self.data_dir = Path(data_dir)
        self.store = FileStore(self.data_dir)
        self.job_process = job_process
        self.mailbox = ForwardingMailbox() if job_process else Mailbox()
        self._lock = threading.Lock()  # one call at a time; guards _job and _job_id changes
        self._job: Any = None  # engine.worker.training.TrainingJob once set up
        self._job_id = ""
        self._group: _Group | None = None  # the job's group (PullState reaches peers by it)
        self._job_about = ""  # "run X from coordinator Y", for log lines
        self._ended: OrderedDict[str, _Ended] = OrderedDict()
        self._rows: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=10_000)
        self._on_busy = on_busy
        self.confine_paths = confine_paths
        self.ring_port = RingPort()  # reported in Describe; MLX's ring listens on it (mlx mode)
        self.guard = OrphanGuard(job_lease_s, self._end_orphan) if job_lease_s else None
        self.spares: Any = None
        self._starting: Any = None  # the job process a SetupJob is building in (job_process)
        if job_process and warm_spare:
            from engine.worker.spare import SparePool

            self.spares = SparePool()

    def _tell_busy(self, busy: bool) -> None:
        if self._on_busy is not None:
            try:
                self._on_busy(busy)
            except Exception:  # noqa: BLE001 - an advertisement must never fail a job call
                log.warning("busy/idle callback failed", exc_info=True)

    # ---- life cycle ----------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A job is set up and has not ended. A job ended from outside its call (the orphan
        guard, a Stop that kills a stuck job) is marked ended before its process is killed,
        so it reads idle from then on, while the call that waited on it still unwinds."""
        job, job_id = self._job, self._job_id
        return job is not None and job_id not in self._ended

    @property
    def job_id(self) -> str:
        return self._job_id

    def collective_servicer(self) -> Any:
        """The Collective servicer feeding this runner's mailbox (hosted by the server)."""
        from engine.rpc.collective_service import CollectiveServicer

        return CollectiveServicer(self.mailbox, self.serve_state)

    def _remember_end(self, job_id: str, reason: str, stopped: bool = False) -> None:
        if job_id and job_id not in self._ended:
            self._ended[job_id] = _Ended(reason, stopped)
            while len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)

    def _drop_job(self, close_timeout_s: float | None = None) -> None:
        """Close the current job and forget it (hold self._lock). ``close_timeout_s``: a job
        process that takes longer to finish is killed (its default otherwise)."""
        job, job_id = self._job, self._job_id
        self._job, self._job_id, self._group = None, "", None
        if self.guard is not None:
            self.guard.job_ended(job_id)
        if job is not None:
            if close_timeout_s is not None and self.job_process:
                job.close(close_timeout_s)
            else:
                job.close()
            self._tell_busy(False)

    def _need_job(self, call: str, job_id: str = "") -> Any:
        """The current job; ``job_id`` (the caller's, "" for none) must be it."""
        if job_id and job_id != self._job_id:
            ended = self._ended.get(job_id)
            if ended is not None and ended.stopped:
                raise OutOfOrder(f"{call}: job {job_id} was stopped ({ended.reason}); "
                                 "call SetupJob first")  # fmt: skip
            why = ended.reason if ended else "unknown here: the worker may have restarted"
            now = f"it now runs job {self._job_id}" if self._job is not None else "it is idle"
            raise JobLost(f"job {job_id} is no longer on this worker ({why}); {now}: "
                          "set the job up again")  # fmt: skip
        if self._job is None:
            raise OutOfOrder(f"{call}: no job is set up on this worker; call SetupJob first")
        return self._job

    def _end_orphan(self, job_id: str, reason: str, kill: bool) -> None:
        """OrphanGuard's verdict: end ``job_id`` if it is still the current job."""
        job = self._job
        if job is None or self._job_id != job_id:
            return
        # Marked ended before the kill: a call failing on it names the reason, and Describe
        # (and the advertisement) say idle while that call still unwinds.
        self._remember_end(job_id, reason)
        self._tell_busy(False)
        log.warning("ending job %s (%s): %s", job_id, self._job_about, reason)
        if kill and hasattr(job, "kill"):
            job.kill()  # a call waiting on the job fails now and releases the lock
        if not self._lock.acquire(timeout=30.0):
            log.error("job %s: a call still holds the worker; it ends when the call does", job_id)
            return
        try:
            if self._job is job:
                self._drop_job()
        finally:
            self._lock.release()

    # ---- calls ---------------------------------------------------------------------------
    @contextmanager
    def coordinator_call(
        self, call: str, job_id: str = "", is_active: Callable[[], bool] = lambda: True
    ) -> Iterator[CallTicket | None]:
        """Hold the job's lease while a coordinator call runs. The ticket (None without a
        lease) goes to the orphan guard; ``is_active`` false at the end means the call was
        cancelled (its client vanished) while the worker served it. SetupJob's ticket
        serves no job until the servicer gives it the new job's id."""
        if self.guard is None or (job_id and job_id != self._job_id and call != "SetupJob"):
            yield None  # no lease to hold: a stale call fails at once, renewing nothing
            return
        ticket = self.guard.begin(call, "" if call == "SetupJob" else job_id or self._job_id)
        try:
            yield ticket
        finally:
            self.guard.end(ticket, client_gone=not is_active())

    def renew(self, job_id: str) -> None:
        """A keep-alive (a Describe carrying the job's id) renews the job's lease."""
        if self.guard is not None:
            self.guard.renew(job_id)

    def setup(
        self, job_toml: str, rank: int, world: int, peers: list[str], files: dict[str, str],
        run_id: str = "", group_token: str = "", mlx_hostfile: str = "",
        peer_certs: list[str] | None = None, coordinator: str = "", caller: str = "",
    ) -> SetupResult:  # fmt: skip
        """``coordinator`` names the caller in log lines (its address and client id);
        ``caller`` is its paired client id ("" for a local worker's token holder): the files
        kept on its word are its job's to load (engine/worker/files.py)."""
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
        if not self._lock.acquire(timeout=CALL_WAIT_S):  # a call of an ended job may unwind
            raise OutOfOrder("SetupJob: another call is running on this worker")
        job_id = secrets.token_hex(8)
        about = f"run {run_id or '?'}, rank {rank}, coordinator {coordinator or '?'}"
        try:
            if self._job is not None:
                self._remember_end(self._job_id, f"replaced by job {job_id} ({about})")
                log.info("job %s (%s) replaced by job %s", self._job_id, self._job_about, job_id)
                self._drop_job()
            # one folder per process and rank: workers on one machine may share data_dir
            job_dir = (
                self.data_dir / "jobs" / f"{check_name(run_id or 'run')}.rank{rank}.{os.getpid()}"
            )
            paths = self.store.materialize(files, job_dir, caller)
            self.mailbox.set_token(group_token)
            args = dict(
                job_toml=job_toml, rank=rank, world=world, peers=peers, paths=paths,
                group_token=group_token, mlx_hostfile=mlx_hostfile, job_dir=job_dir,
                peer_certs=peer_certs or [],
            )  # fmt: skip
            if self.job_process:
                from engine.worker.job_process import ProcessJob, Spawned

                self._starting = self.spares.take() if self.spares else Spawned()
                try:
                    self._job = ProcessJob.start(self.mailbox, args, self._starting)
                finally:
                    self._starting = None
            else:
                from engine.worker.training import TrainingJob  # imports MLX

                self._job = TrainingJob.build(mailbox=self.mailbox, **args)
            self._job_id, self._job_about = job_id, about
            self._group = _Group(rank, list(peers), list(peer_certs or []), group_token)
            if self.guard is not None:
                self.guard.job_started(job_id)
            log.info("job %s set up (%s)", job_id, about)
            info = replace(self._job.describe(), job_id=job_id)
            self._rows.put_nowait({"kind": "log", "level": "info", "message": info.message})
            return info
        finally:
            self._lock.release()
            self._tell_busy(self._job is not None)

    def _locked(self, call: str, fn: Callable[[Any], Any], job_id: str = "") -> Any:
        from engine.worker.job_process import JobCrashed

        if not self._lock.acquire(timeout=CALL_WAIT_S):
            raise OutOfOrder(f"{call}: another call is still running on this worker")
        try:
            job = self._need_job(call, job_id)
            try:
                return fn(job)
            except JobCrashed as e:
                self._remember_end(self._job_id, f"its process died: {e}")
                why = self._ended[self._job_id].reason if self._job_id in self._ended else e
                log.warning("%s: job %s lost (%s); the worker forgets it", call, self._job_id, why)
                self._drop_job()
                raise
        finally:
            self._lock.release()

    def step(
        self, step: int, lr: float, job_id: str = "", shares: list[int] | None = None,
        micro_batches: int = 0,
    ) -> StepResult:  # fmt: skip
        """``shares``: sequences of the global batch by rank (None: an equal split);
        ``micro_batches``: how many this worker cuts its share into (0: run.grad_accum)."""
        if step < 0 or not np.isfinite(lr) or lr < 0:
            raise InvalidRequest(
                f"Step: expected step >= 0 and a finite learning rate >= 0, got {step}, {lr}"
            )
        if micro_batches < 0 or (shares and min(shares) < 0):
            raise InvalidRequest(f"Step: expected shares and micro_batches >= 0, got "
                                 f"{list(shares or [])} and {micro_batches}")  # fmt: skip
        split = (list(shares) if shares else None, micro_batches)
        return self._locked("Step", lambda job: job.step(step, lr, *split), job_id)

    def evaluate(self, step: int, max_batches: int, job_id: str = "") -> tuple[float, int]:
        return self._locked("Evaluate", lambda job: job.evaluate(max_batches), job_id)

    def get_state(
        self, step: int, adapter: bool = False, job_id: str = "", params_only: bool = False
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The job's state (``params_only``: parameters and counters of ``step``, no
        moments), or its adapter files."""

        def read(job: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
            if adapter:
                return job.adapter_files()
            return job.serve_state(step, True, 0, 0) if params_only else job.get_state()

        return self._locked("GetState", read, job_id)

    def put_state(
        self, meta: dict[str, Any], tensors: dict[str, np.ndarray], job_id: str = ""
    ) -> int:
        return self._locked("PutState", lambda job: job.put_state(meta, tensors), job_id)

    def regroup(
        self, rank: int, world: int, peers: list[str], group_token: str,
        peer_certs: list[str] | None = None, job_id: str = "",
    ) -> dict[str, Any]:  # fmt: skip
        """A peer was lost: the same job goes on as ``rank`` of ``world`` with these peers.
        A step still waiting on the lost peer fails first (its state goes back to the last
        completed step), then the collectives start afresh under ``group_token``; the model,
        data and optimizer state stay. Returns ``{"step": steps done, "regroup_s": ...}``."""
        if not 0 <= rank < world:
            raise InvalidRequest(f"rank {rank}: expected 0 <= rank < world_size ({world})")
        if len(peers) != world:
            raise InvalidRequest(
                f"peers: expected {world} addresses (one per rank), got {len(peers)}"
            )
        if world > 1 and not group_token:
            raise InvalidRequest("group_token: required when world_size > 1")
        if peer_certs and len(peer_certs) != len(peers):
            raise InvalidRequest(
                f"peer_certs: expected {len(peers)} certificates, got {len(peer_certs)}"
            )
        self._need_job("Regroup", job_id)  # no job, or another one: say so, touch nothing
        # the step in flight waits on the lost peer: fail it now (as Stop does) and let it
        # unwind; a long compute part still runs to its next collective first
        self.mailbox.fail(RuntimeError("regrouping: a peer was lost"))
        if not self._lock.acquire(timeout=REGROUP_WAIT_S):
            raise OutOfOrder(
                f"Regroup: the step in flight did not end within {REGROUP_WAIT_S:.0f}s"
            )
        try:
            job = self._need_job("Regroup", job_id)
            self.mailbox.set_token(group_token)  # drops the old group's pieces, clears the failure
            try:
                out = job.regroup(rank, world, list(peers), group_token, peer_certs or [])
                self._group = _Group(rank, list(peers), list(peer_certs or []), group_token)
                return out
            except Exception as e:
                from engine.worker.job_process import JobCrashed

                if isinstance(e, JobCrashed):
                    self._remember_end(self._job_id, f"its process died: {e}")
                    self._drop_job()
                raise
        finally:
            self._lock.release()

    def pull_state(
        self, step: int, params_from: int, slices: list[Any], job_id: str = "",
        timeout_s: float = 60.0,
    ) -> dict[str, Any]:  # fmt: skip
        """Take the group's state of ``step`` from peers, worker to worker (a worker that
        joined; ZeRO-1: every worker re-cuts its shard): the parameters, counters and loss
        scale of ``params_from`` (-1: keep its own) and the moments of ``slices``
        (engine/worker/peer_state.py's Slice, tiling this worker's moment range). Every part
        is fetched before anything changes: a peer that cannot be reached, is at another
        step or refuses leaves this worker as it was (PeerFailed). Returns ``{"step",
        "pull_s", "received_bytes"}``."""
        from engine.rpc.state_fetch import FetchFailed, fetch_state
        from engine.worker.peer_state import assemble, check_pull, requests

        t0 = time.perf_counter()

        def fetch(rank: int, params: bool, lo: int, hi: int) -> Any:
            group = self._group
            assert group is not None  # set with the job
            cert = group.peer_certs[rank] if group.peer_certs else ""
            left = max(1.0, timeout_s - (time.perf_counter() - t0))
            try:
                return fetch_state(rank, group.peers[rank], group.token, step, params, lo, hi,
                                   group.rank, cert, left)  # fmt: skip
            except FetchFailed as e:
                raise PeerFailed(f"{e}; nothing was changed") from None

        def pull(job: Any) -> dict[str, Any]:
            group, own = self._group, job.state_meta()
            assert group is not None  # set with the job
            check_pull(own, step, params_from, slices)
            asks = requests(group.rank, params_from, slices)
            peers = [r for r in asks if r != group.rank]
            with ThreadPoolExecutor(max(1, len(peers)), thread_name_prefix="pull") as pool:
                fetched = {r: pool.submit(fetch, r, *asks[r]) for r in peers}
                parts = {r: f.result() for r, f in fetched.items()}
            received = sum(int(t.nbytes) for _, ts in parts.values() for t in ts.values())
            if group.rank in asks:  # its own shard from before the regroup: no network
                parts[group.rank] = job.serve_state(step, *asks[group.rank])
            meta, tensors = assemble(own, parts, params_from, slices)
            now = job.take_state(meta, tensors)
            took = time.perf_counter() - t0
            log.info("pulled the state of step %d from peers %s in %.3fs (%d bytes)", step,
                     sorted(r for r in parts if r != group.rank), took, received)  # fmt: skip
            return {"step": now, "pull_s": took, "received_bytes": received}

        return self._locked("PullState", pull, job_id)

    def serve_state(self, step: int, params: bool, lo: int, hi: int) -> Any:
        """A part of this job's state for a peer of its group (Collective.FetchState, which
        checked the group token). Not under the call lock: peers re-cutting ZeRO-1 shards
        read each other's while each runs its own PullState."""
        job = self._job
        if job is None or self._job_id in self._ended:
            raise OutOfOrder("no job is set up on this worker")
        return job.serve_state(step, params, lo, hi)

    def metric_rows(self, active: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        while active():
            try:
                yield self._rows.get(timeout=0.5)
            except queue.Empty:
                continue

    def stop(self, reason: str = "", job_id: str = "") -> None:
        """End the job (a collective waiting on peers fails at once). The process keeps
        serving: a local worker exits when its engine closes the lifeline. A Stop carrying
        another job's id is stale (a dead coordinator's run) and is ignored. On a job
        process, a call still running STOP_GRACE_S later is stuck (MLX's collective): the
        process is killed, the call fails 'job lost' and the worker is free at once."""
        if job_id and job_id != self._job_id:
            log.info("ignored a Stop for job %s, which is no longer here%s", job_id,
                     f": {reason}" if reason else "")  # fmt: skip
            return
        log.info("stop requested%s", f": {reason}" if reason else "")
        self.mailbox.fail(RuntimeError(f"worker stopped ({reason or 'no reason given'})"))
        job, starting, held = self._job, self._starting, False
        if self.job_process and (job is not None or starting is not None):
            held = self._lock.acquire(timeout=STOP_GRACE_S)
            if not held and job is not None and self._job is job:
                self._remember_end(self._job_id, f"Stop: {reason or 'no reason given'}", True)
                log.warning("Stop: a call is stuck in job %s after %.0fs; killing its process",
                            self._job_id, STOP_GRACE_S)  # fmt: skip
                job.kill()  # the stuck call fails with JobCrashed and releases the lock
            elif not held and starting is not None and self._starting is starting:
                log.warning("Stop: SetupJob is stuck after %.0fs (MLX's group waiting for a "
                            "peer?); killing its job process", STOP_GRACE_S)  # fmt: skip
                starting.proc.kill()  # SetupJob fails with JobCrashed and releases the lock
        if not held:
            self._lock.acquire()
        try:
            if job_id and job_id != self._job_id:
                return
            if self._job is not None:
                self._remember_end(self._job_id, f"Stop: {reason or 'no reason given'}", True)
                self._drop_job(STOP_GRACE_S)  # a frozen job process must not hold the Stop
        finally:
            self._lock.release()

    def close(self) -> None:
        """Shut down: a collective waiting on peers fails at once (as in stop), so the call
        in it returns and the job closes in order instead of the exit waiting it out."""
        self.mailbox.fail(RuntimeError("the worker is shutting down"))
        if self.guard is not None:
            self.guard.close()
        if self.spares is not None:
            self.spares.close()
        self.ring_port.close()
        held = self._lock.acquire(timeout=CALL_WAIT_S)  # a call stuck in the job must not hold exit
        try:
            self._drop_job()
        finally:
            if held:
                self._lock.release()
