"""The workers of one run, driven together: start or connect, ship files, set up, step, stop.

Every call goes to all workers at once (a thread per worker) and waits for all of them;
a failure names the worker. Local workers are processes this object started and stops.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from engine.config import JobSpec
from engine.events import EventSink
from engine.machine import PROTOCOL_VERSION
from engine.rpc.auth import TOKEN_ENV, new_token
from engine.rpc.worker_client import WorkerCallError, WorkerClient
from engine.runtime.local_workers import (
    LocalWorker,
    Pending,
    await_local_workers,
    kill_local_workers,
    spawn_local_workers,
    stop_local_workers,
)
from engine.runtime.shipped_files import (
    ShipProgress,
    content_hash,
    files_to_ship,
    lazy_wire_checksum,
    resolve_model,
    shipped_name,
)
from engine.runtime.warm_workers import WarmWorkers
from engine.worker.agent import default_data_dir
from engine.worker.job import StepResult

log = logging.getLogger(__name__)
T = TypeVar("T")

STOP_TIMEOUT_S = 15.0  # a stuck job's process is killed 2 s after Stop; room for a slow link
KEEPALIVE_S = 60.0  # well inside a network worker's job lease (DEFAULT_JOB_LEASE_S, 300 s)
SHIP_STREAMS = 2  # files sent to one worker at once (a model's shards)


@dataclass
class Departed:
    """A worker that left the group: where it was, so it can come back (engine/runtime/rejoin.py)."""

    address: str
    local: bool  # a process this engine started: it comes back as a fresh process


@dataclass
class Member:
    """A worker ready to join the group: its client, and its process when it is local."""

    client: WorkerClient
    peer_cert: str = ""
    local: LocalWorker | None = None
    ready_at: float = 0.0  # time.time() when it answered again (engine/runtime/rejoin.py)
    prepared_s: float = 0.0  # > 0: set up already, as a group of one (Cluster.prepare)


class ProtocolMismatch(RuntimeError):
    """A worker speaks another Orchard protocol; nothing was shipped to it."""


class ShipStopped(RuntimeError):
    """The run was stopped while files were on their way; workers keep what they received,
    and the next run resumes each file from there."""


class Cluster:
    def __init__(self, job: JobSpec, run_dir: Path, data_dir: Path | None = None,
                 sink: EventSink | None = None, cancel: threading.Event | None = None,
                 warm: WarmWorkers | None = None):  # fmt: skip
        """``sink`` gets the model download's and each worker's shipping progress;
        ``cancel`` (the run's stop event) ends a model download or the shipping early;
        ``warm``: local workers spawned ahead of the run (engine/runtime/warm_workers.py),
        taken by start() when they fit the job."""
        self.job = job
        self.sink, self.cancel = sink, cancel
        self.model_dir: Path | None = None  # the coordinator's snapshot of a Hugging Face id
        self.run_dir = run_dir
        self.remote = bool(job.dist.hosts)
        self.data_dir = data_dir or default_data_dir()
        self.token = os.environ.get(TOKEN_ENV, "") if self.remote else new_token()
        self.group_token = new_token()
        self.local: list[LocalWorker] = []
        self.clients: list[WorkerClient] = []
        self.peer_certs: list[str] = []  # paired remote workers' pinned certificates, by rank
        self._pool: ThreadPoolExecutor | None = None
        self._started = 0  # local worker processes started so far
        self._spares: list[Pending] = []  # mlx mode: fresh processes for a re-form
        self._ended = threading.Event()
        self._warm = warm

    @property
    def size(self) -> int:
        return len(self.clients)

    @property
    def addresses(self) -> list[str]:
        return [c.address for c in self.clients]

    def start(self) -> None:
        """Start the local workers (or take the warm ones, or connect to the hosts) and wait
        until all answer."""
        warm, self._warm = self._warm, None
        if warm is not None and not warm.fits(self.job, self.data_dir):
            log.info("the workers started ahead do not fit this run's settings: ending them")
            warm.close()
            warm = None
        if self.remote:
            addresses = list(self.job.dist.hosts)
            if not self.token:  # network workers: pinned TLS + signed calls, or a clear refusal
                self._connect_paired(addresses)
        elif warm is not None:
            self.token = warm.token
            pending = warm.take(self.run_dir / "workers")
            self._started += len(pending)
            self.local = await_local_workers(pending)
            addresses = [w.address for w in self.local]
        else:
            self.local = self._start_locals(self.job.dist.workers)
            addresses = [w.address for w in self.local]
        if not self.clients:  # local workers, or hosts that take ORCHARD_WORKER_TOKEN (--local)
            self.clients = [WorkerClient(a, self.token, timeout_s=30.0) for a in addresses]
        self._pool = ThreadPoolExecutor(  # threads start lazily: room for workers that rejoin
            max_workers=max(64, len(self.clients)), thread_name_prefix="orchard-cluster"
        )
        self.all(lambda c: c.wait_ready(timeout_s=30.0))
        self.all(check_protocol)
        if self.remote:
            threading.Thread(target=self._keep_alive, name="orchard-keepalive", daemon=True).start()

    def _keep_alive(self) -> None:
        """A network worker closes a job none of whose calls came for its lease (300 s by
        default: engine/worker/orphans.py); between calls further apart than that (a slow
        peer's SetupJob, a long checkpoint write) this keeps each job's lease."""
        while not self._ended.wait(KEEPALIVE_S):
            for c in list(self.clients):
                try:
                    c.keep_alive()
                except Exception as e:  # noqa: BLE001 - a lost worker is the Watcher's to find
                    log.debug("keep-alive to %s: %s", c.address, e)

    def _start_local(self) -> LocalWorker:
        return self._start_locals(1)[0]

    def _start_locals(self, count: int) -> list[LocalWorker]:
        """``count`` local worker processes, started together (their imports overlap)."""
        return await_local_workers(self._spawn_locals(count))

    def _spawn_locals(self, count: int) -> list[Pending]:
        logs = [self.run_dir / "workers" / f"worker{self._started + i}.log" for i in range(count)]
        self._started += count  # one log file per process, replacements included
        d = self.job.dist
        return spawn_local_workers(
            self.token, self.data_dir, logs, workers_on_host=d.workers, niceness=d.worker_niceness,
        )  # fmt: skip

    def keep_spares(self) -> None:
        """Local workers in mlx mode: hold fresh processes ready (spawned, importing the
        training stack), so a re-form in new processes (restart_local) does not wait for
        processes to start. Call from the run's own thread: a local worker dies with the
        thread that started it."""
        if self.remote or self.job.dist.mode != "mlx" or self._spares:
            return
        self._spares = self._spawn_locals(self.job.dist.workers)

    def reconnect(self, gone: Departed, timeout_s: float) -> Member:
        """A worker for the place ``gone`` left: a fresh local process, or the same remote
        worker once it answers (raises WorkerCallError or OSError until it does)."""
        if gone.local:
            worker = self._start_local()
            client = WorkerClient(worker.address, self.token, timeout_s=30.0)
            member = Member(client, local=worker)
        elif self.token:
            member = Member(WorkerClient(gone.address, self.token, timeout_s=30.0))
        else:
            from engine.rpc.paired_client import connect_paired
            from engine.trust import open_trust_home

            client, peer = connect_paired(gone.address, open_trust_home(), timeout_s=timeout_s)
            member = Member(client, peer_cert=peer.cert_pem)
        try:
            member.client.wait_ready(timeout_s=timeout_s)
            check_protocol(member.client)
            if not gone.local:  # a worker that froze may still run a step of the old group:
                member.client.stop("rejoining a re-formed group", timeout_s=30.0)  # end it
        except BaseException:
            self.discard(member)
            raise
        return member

    def prepare(
        self, member: Member, run_id: str, stopped: Callable[[], bool] = lambda: False
    ) -> None:
        """Set a returning worker up before it joins, while the group trains on: ship it the
        files it lacks and SetupJob it as a group of one (model loaded, data ready); at the
        join it only regroups and takes the state (engine/runtime/returning_workers.py).
        Raises what the shipping or SetupJob raised; ShipStopped once the run ends or
        ``stopped()`` says so."""
        t0 = time.perf_counter()
        files = files_to_ship(self.job, self.remote, self.model_dir)
        hashes = {role: content_hash(p) for role, p in files.items()}
        c = member.client

        def sent(_n: int) -> None:
            cancelled = self.cancel is not None and self.cancel.is_set()
            if self._ended.is_set() or cancelled or stopped():
                raise ShipStopped(f"stopped while preparing {c.address}")

        for role, path in sorted(files.items(), key=lambda rp: -rp[1].stat().st_size):
            if not c.has_file(hashes[role]):
                c.put_file(path, hashes[role], name=shipped_name(role, path), on_progress=sent)
        certs = [member.peer_cert] if member.peer_cert else []
        c.setup_job(self.job.to_toml(), 0, 1, [c.address], run_id, hashes, new_token(),
                    peer_certs=certs)  # fmt: skip
        member.prepared_s = time.perf_counter() - t0

    def discard(self, member: Member) -> None:
        """Close a worker that will not join after all (its process too, when local)."""
        if member.prepared_s and member.local is None:  # its job holds a model: end it
            try:
                member.client.stop("it will not join", timeout_s=5.0)
            except Exception as e:  # noqa: BLE001 - it may be gone already
                log.info("worker %s: stop: %s", member.client.address, e)
        member.client.close()
        if member.local is not None:
            stop_local_workers([member.local], grace_s=0.1)

    def add(self, members: list[Member]) -> None:
        """Workers join at the end of the ranks, under a fresh group token: call setup()
        and put_states() afterwards, as after drop()."""
        for m in members:
            self.clients.append(m.client)
            if m.local is not None:
                self.local.append(m.local)
            if self.peer_certs or m.peer_cert:
                self.peer_certs.append(m.peer_cert)
        self.group_token = new_token()

    def restart_local(self, count: int) -> None:
        """Replace every local worker by a fresh process (``count`` of them): MLX's own
        group (dist.mode 'mlx') initialises once per process and can only re-form this way."""
        for c in self.clients:
            c.close()
        kill_local_workers(self.local)  # stuck in MLX's collective: no grace to wait out
        spares, self._spares = self._spares[:count], self._spares[count:]
        self.local = await_local_workers(spares + self._spawn_locals(count - len(spares)))
        self.clients = [WorkerClient(w.address, self.token, timeout_s=30.0) for w in self.local]
        self.all(lambda c: c.wait_ready(timeout_s=30.0))
        self.group_token = new_token()

    def _connect_paired(self, addresses: list[str]) -> None:
        from engine.rpc.paired_client import connect_paired
        from engine.trust import open_trust_home

        home = open_trust_home()
        try:
            for address in addresses:
                client, peer = connect_paired(address, home, timeout_s=30.0)
                self.clients.append(client)
                self.peer_certs.append(peer.cert_pem)
        except BaseException:
            for c in self.clients:
                c.close()
            self.clients, self.peer_certs = [], []
            raise

    def all(self, fn: Callable[[WorkerClient], T]) -> list[T]:
        """``fn(client)`` on every worker concurrently; results by rank."""
        return self.all_ranked(lambda _rank, c: fn(c))

    def ship_files(self) -> dict[str, str]:
        """Send each file a worker does not hold yet (by sha256); returns role -> sha256.
        A Hugging Face id is downloaded once, here, and shipped like a local folder. Each
        worker gets ``SHIP_STREAMS`` files at once; a Stop ends the shipping (ShipStopped)."""
        if self.model_dir is None:
            self.model_dir = resolve_model(self.job, self.sink, self.cancel)
        files = files_to_ship(self.job, self.remote, self.model_dir)
        hashes = {role: content_hash(p) for role, p in files.items()}
        sink = self.sink or (lambda _e: None)
        stopped = self.cancel.is_set if self.cancel is not None else (lambda: False)

        def ship(rank: int, c: WorkerClient) -> None:
            todo = [(r, p) for r, p in files.items() if not c.has_file(hashes[r])]
            held = sum(p.stat().st_size for r, p in files.items() if (r, p) not in todo)
            progress = ShipProgress(
                sink, c.address, rank, [p.stat().st_size for _, p in todo], held
            )

            def send(role: str, path: Path) -> None:
                name = shipped_name(role, path)

                def sent(n: int) -> None:
                    if stopped():
                        raise ShipStopped(f"stopped while shipping {name} to {c.address}")
                    progress.emit(n, name)

                try:
                    c.put_file(path, hashes[role], name=name, on_progress=sent,
                               checksum=lazy_wire_checksum(path))  # fmt: skip
                except Exception as e:
                    if not stopped():
                        raise
                    raise ShipStopped(
                        f"stopped while shipping {name} to {c.address}: it keeps the bytes it "
                        "received, and the next run resumes the file from there"
                    ) from e
                progress.file_done(path.stat().st_size, name)

            # the largest first, a few at once: each file's sha256 runs on its own core there
            todo.sort(key=lambda rp: -rp[1].stat().st_size)
            with ThreadPoolExecutor(SHIP_STREAMS, thread_name_prefix=f"ship-{rank}") as pool:
                sending = [pool.submit(send, r, p) for r, p in todo]
                try:
                    for f in sending:
                        f.result()
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)  # the rest would be in vain
                    raise
            progress.emit(0, "", done=True)

        # Workers of one host may share a file cache (local workers do). The first worker of
        # each host gets its files first; the others then find them held, so the bytes cross
        # once per host (the cache itself takes concurrent copies safely: worker/incoming.py).
        assert self._pool is not None, "Cluster.start() first"
        hosts: dict[str, int] = {}
        for r, a in enumerate(self.addresses):
            hosts.setdefault(a.rsplit(":", 1)[0], r)
        first = sorted(hosts.values())
        rest = [r for r in range(self.size) if r not in hosts.values()]
        for ranks in (first, rest):
            self.some_ranked(ranks, ship)
        return hashes

    def ring_addresses(self) -> list[str]:
        """Each rank's "ip:port" for MLX's ring hostfile: the address this engine reaches the
        worker at, and the port the worker holds on its own host (engine/worker/ring_port.py)."""
        ports = self.all(lambda c: c.describe()["ring_port"])
        for c, port in zip(self.clients, ports, strict=True):
            if not port:
                raise RuntimeError(
                    f"worker {c.address} reported no port for MLX's ring (dist.mode 'mlx'): "
                    "its log says why, or it runs an older Orchard: update it"
                )
        return [f"{a.rsplit(':', 1)[0]}:{p}" for a, p in zip(self.addresses, ports, strict=True)]

    def setup(
        self, files: dict[str, str], run_id: str, mlx_hostfile: str = "",
        ranks: list[int] | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """SetupJob on every worker (or on ``ranks`` only: newcomers beside workers that
        regroup), each with its rank in the current group."""
        job_toml = self.job.to_toml()
        peers = self.addresses
        call = self.all_ranked if ranks is None else partial(self.some_ranked, ranks)
        return call(
            lambda rank, c: c.setup_job(
                job_toml,
                rank,
                len(peers),
                peers,
                run_id,
                files,
                self.group_token,
                mlx_hostfile,
                peer_certs=self.peer_certs,
            )
        )

    def regroup(self, ranks: list[int] | None = None) -> list[dict[str, Any]]:
        """These workers (default all) go on with their loaded jobs under the current ranks
        and group token (after drop() or add()): ``{"step", "regroup_s"}`` each. Raises
        WorkerCallError (code UNIMPLEMENTED from a worker of an older Orchard)."""
        peers = self.addresses
        return self.some_ranked(
            range(self.size) if ranks is None else ranks,
            lambda rank, c: c.regroup(
                rank, len(peers), peers, self.group_token, peer_certs=self.peer_certs
            ),
        )

    def some_ranked(self, ranks: Any, fn: Callable[[int, WorkerClient], T]) -> list[T]:
        """``fn(rank, client)`` on these ranks at once; waits for all, raises the first error."""
        assert self._pool is not None, "Cluster.start() first"
        futures = [self._pool.submit(fn, r, self.clients[r]) for r in ranks]
        errors = [e for f in futures if (e := f.exception()) is not None]
        if errors:
            raise errors[0]
        return [f.result() for f in futures]

    def all_ranked(self, fn: Callable[[int, WorkerClient], T]) -> list[T]:
        """``fn(rank, client)`` on every worker; waits for all, then raises the most telling
        error: a worker that cannot be reached is the cause, its peers' failures the effect."""
        assert self._pool is not None, "Cluster.start() first"
        futures = [self._pool.submit(fn, r, c) for r, c in enumerate(self.clients)]
        errors = [e for f in futures if (e := f.exception()) is not None]
        if errors:
            lost = [e for e in errors if isinstance(e, WorkerCallError) and e.unreachable]
            raise (lost or errors)[0]
        return [f.result() for f in futures]

    def step(self, step: int, lr: float) -> list[StepResult]:
        timeout = self.job.dist.step_timeout_s
        return self.all(lambda c: c.step(step, lr, timeout_s=timeout))

    def evaluate(self, step: int, max_batches: int) -> tuple[float, int]:
        timeout = self.job.dist.step_timeout_s
        parts = self.all(lambda c: c.evaluate(step, max_batches, timeout_s=timeout))
        return sum(p[0] for p in parts), sum(p[1] for p in parts)

    def get_states(self, step: int) -> list[tuple[dict[str, Any], dict[str, np.ndarray]]]:
        return self.all(lambda c: c.get_state(step))

    def put_states(
        self, states: list[tuple[dict[str, Any], dict[str, np.ndarray]]],
        ranks: list[int] | None = None,
    ) -> list[int]:  # fmt: skip
        """PutState by rank (``states[r]`` to rank r), to every worker or to ``ranks``."""
        if ranks is not None:
            return self.some_ranked(ranks, lambda r, c: c.put_state(*states[r]))
        return self.all_ranked(lambda r, c: c.put_state(*states[r]))

    def pull_states(self, pulls: dict[int, Any], step: int, state_bytes: int) -> list[dict]:
        """Worker.PullState on the ranks of ``pulls`` (engine/runtime/join_plan.py's Pull by
        rank) at once: each takes its state of ``step`` from its peers, worker to worker.
        ``state_bytes``: one worker's whole state, which sizes the deadline."""
        from engine.rpc.worker_client import SECONDS_PER_MIB

        timeout = 30.0 + SECONDS_PER_MIB * state_bytes / 2**20
        return self.some_ranked(
            sorted(pulls),
            lambda r, c: c.pull_state(step, pulls[r].params_from, pulls[r].moments, timeout),
        )

    def adapter_files(self, step: int) -> dict[str, bytes]:
        """The adapter folder's files from rank 0 (every rank holds the same weights)."""
        from engine.lora.adapters import CONFIG_FILE, restamp_config

        meta, tensors = self.clients[0].get_state(step, adapter=True)
        files = {name: tensors[name].tobytes() for name in meta.get("files", [])}
        if CONFIG_FILE in files:  # the base and the dataset as this machine names them
            files[CONFIG_FILE] = restamp_config(files[CONFIG_FILE], self.job)
        return files

    def reachable(self, rank: int, timeout_s: float = 2.0) -> bool:
        """Is this worker alive? A local process that exited is not; else a health check."""
        if self.local and self.local[rank].proc.poll() is not None:
            return False
        try:
            self.clients[rank].wait_ready(timeout_s=timeout_s)
        except WorkerCallError:
            return False
        return True

    def stop_jobs(self, ranks: list[int], reason: str) -> None:
        """Stop these workers' jobs at once, in parallel (best effort). A network agent kills
        a job process still stuck in a call 2 s after Stop (engine/worker/job.py)."""

        def stop(rank: int) -> None:
            try:
                self.clients[rank].stop(reason, timeout_s=STOP_TIMEOUT_S)
            except WorkerCallError as e:
                log.warning("worker %s: stop: %s", self.clients[rank].address, e)

        assert self._pool is not None, "Cluster.start() first"
        for f in [self._pool.submit(stop, r) for r in ranks]:
            f.result()

    def abandon(self, reason: str) -> None:
        """End every worker's job now, whatever it is doing (a step that will not finish):
        local worker processes are killed; network agents kill a job process still stuck
        2 s after Stop. The group's state is then only what the coordinator holds."""
        if self.local:
            for w in self.local:
                if w.proc.poll() is None:
                    log.warning("killing worker pid %d: %s", w.pid, reason)
                    w.proc.kill()
        else:
            self.stop_jobs(list(range(self.size)), reason)

    def drop(self, ranks: list[int]) -> list[Departed]:
        """Forget lost workers (a local one is killed) and take a fresh group token, so the
        survivors form a new group whose op ids never meet the old one's stray frames.
        Call setup() again afterwards: the ranks have changed. Returns who left."""
        gone = set(ranks)
        departed = [Departed(self.clients[r].address, bool(self.local)) for r in sorted(gone)]
        for r in sorted(gone):
            self.clients[r].close()
            if self.local:
                stop_local_workers([self.local[r]], grace_s=0.1)
        self.clients = [c for r, c in enumerate(self.clients) if r not in gone]
        if self.local:
            self.local = [w for r, w in enumerate(self.local) if r not in gone]
        if self.peer_certs:  # remote workers: the pins follow their ranks
            self.peer_certs = [p for r, p in enumerate(self.peer_certs) if r not in gone]
        self.group_token = new_token()
        return departed

    def leave_out(self, before: int, group_token: str) -> None:
        """Newcomers (ranks ``before`` and up) that could not join go again, and the group
        goes on under its old token: the others never left it (nothing to set up again)."""
        self.drop(list(range(before, self.size)))
        self.group_token = group_token

    def stop(self, reason: str) -> None:
        """Stop every worker (best effort: a dead one must not block the others)."""
        self._ended.set()
        for c in self.clients:
            try:
                c.stop(reason, timeout_s=5.0)
            except Exception as e:  # noqa: BLE001 - stopping continues past a lost worker
                log.info("worker %s: stop: %s", c.address, e)
            c.close()
        if self.local:
            stop_local_workers(self.local, grace_s=10.0)
        spares, self._spares = self._spares, []
        kill_local_workers([LocalWorker(proc=p, port=0, log_path=lp, stdin=p.stdin)
                            for p, lp in spares])  # fmt: skip
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def check_protocol(client: WorkerClient) -> None:
    """Refuse a worker that speaks another protocol before any file is shipped to it."""
    theirs = client.describe().get("protocol_version")
    if theirs != PROTOCOL_VERSION:
        raise ProtocolMismatch(
            f"worker {client.address} speaks orchard protocol {theirs}, this engine speaks "
            f"{PROTOCOL_VERSION}: update Orchard on one of them"
        )
