"""A handle on one worker: hides the stub, the token metadata, channel options and deadlines.

Every call has a deadline. Failures surface as WorkerCallError naming the worker, the call
and the status, so the coordinator can report "worker 1 (127.0.0.1:5123): Step: ..." plainly.
After setup_job, every call carries the job's id (engine/rpc/worker_service.py): a call of a job
that is gone fails with ``job_lost``, and a Stop of it leaves a newer job alone.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine.machine import PROTOCOL_VERSION
from engine.rpc.auth import token_metadata
from engine.rpc.bulk import BulkBroken, BulkRefused, BulkUnavailable, send_file
from engine.rpc.gen import orchard_pb2 as pb
from engine.rpc.gen import orchard_pb2_grpc
from engine.rpc.server import CHANNEL_OPTIONS, CHUNK_BYTES
from engine.rpc.state_stream import decode_state, encode_state
from engine.rpc.worker_service import JOB_HEADER, JOB_LOST_PREFIX
from engine.worker.job import StepResult  # one type for a step, on both sides of the wire

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
SETUP_TIMEOUT_S = 1800.0  # loading and preparing a large model can take minutes
SECONDS_PER_MIB = 2.0  # file/state transfer deadline: generous even for a slow Wi-Fi link
BULK_MIN_BYTES = 512 * 1024  # smaller files go in one PutFile message: no second connection
BULK_ATTEMPTS = 3  # a bulk stream that breaks resumes this often before put_file fails


class WorkerCallError(RuntimeError):
    def __init__(self, address: str, call: str, code: grpc.StatusCode | None, details: str):
        self.address, self.call, self.code, self.details = address, call, code, details
        name = code.name if code is not None else "ERROR"
        super().__init__(f"worker {address}: {call}: {name}: {details}")

    @property
    def unreachable(self) -> bool:
        """The worker could not be reached (process gone, network down), as opposed to
        a call that reached it and failed."""
        return self.code == grpc.StatusCode.UNAVAILABLE

    @property
    def job_lost(self) -> bool:
        """The worker is up but the caller's job is gone from it (its process died, it was
        ended as an orphan, or another job replaced it): set the job up again, or drop the
        worker from the group; it is not a bug in the call."""
        return self.code == grpc.StatusCode.ABORTED and self.details.startswith(JOB_LOST_PREFIX)


class WorkerClient:
    def __init__(
        self,
        address: str,
        token: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        channel: grpc.Channel | None = None,
        pin: str = "",
        bulk: bool = True,
    ):
        """``channel``: an already authenticated channel (remote workers: pinned TLS with
        signed calls, engine/rpc/paired_client.py) and ``pin``, the fingerprint it pins (its
        bulk socket then takes sealed streams only); else plain TCP with ``token``. ``bulk=False``
        sends every file over the PutFile stream."""
        self.address = address
        self.timeout_s = timeout_s
        self._md = token_metadata(token) if channel is None else None
        self._pin = pin or None
        self.use_bulk = bulk  # False: every file over PutFile (also after a bulk socket failed)
        self._host = address.rpartition(":")[0].strip("[]") or address
        self.job_id = ""  # set by setup_job; sent with every later call
        self._channel = channel or grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._stub = orchard_pb2_grpc.WorkerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        tagged = ((JOB_HEADER, self.job_id),) if self.job_id else ()
        return (*(self._md or ()), *tagged) or None

    def _call(self, name: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self._stub, name)(
                request, timeout=timeout or self.timeout_s, metadata=self._metadata()
            )
        except grpc.RpcError as e:
            raise WorkerCallError(self.address, name, e.code(), e.details() or "") from None

    # ---- calls --------------------------------------------------------------------------
    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Block until the server answers its health check (or raise)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
            reply = self._health.Check(
                health_pb2.HealthCheckRequest(service="orchard.v1.Worker"), timeout=timeout_s
            )
        except (grpc.FutureTimeoutError, grpc.RpcError) as e:
            raise WorkerCallError(
                self.address, "health", None, f"not ready after {timeout_s}s: {e}"
            ) from None
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise WorkerCallError(self.address, "health", None, f"status {reply.status}")

    def describe(self) -> dict[str, Any]:
        info = self._call("Describe", pb.DescribeRequest())
        return {f.name: getattr(info, f.name) for f in info.DESCRIPTOR.fields}

    def keep_alive(self) -> bool:
        """Renew this job's lease on a network worker (a Describe carrying the job id); the
        coordinator calls it between calls longer apart than the lease. Returns busy."""
        return bool(self._call("Describe", pb.DescribeRequest()).busy)

    def has_file(self, sha256: str) -> bool:
        return self._call("HasFile", pb.HasFileRequest(sha256=sha256)).present

    def put_file(
        self,
        path: str | Path,
        sha256: str,
        name: str | None = None,
        on_progress: Callable[[int], None] | None = None,
        checksum: str | Callable[[], str] = "",
    ) -> int:
        """Send a file; the worker verifies the hash. Returns the size it stored.
        ``on_progress(bytes of the file sent so far)`` is called as it goes. ``checksum``: the
        file's tagged xxh3-128, computed with its sha256 (engine/worker/checksum.py): the
        worker checks a bulk stream against it instead of hashing sha256 as the bytes come
        (empty: it checks the sha256). A function instead (a file whose sha256 is known
        without reading it: a Hugging Face blob's): called only if the worker needs the
        checksum first; a sealed stream carries it at its end instead, computed as the bytes
        are sealed, with no pass over the file before.

        A large file goes over the worker's bulk socket (engine/rpc/bulk.py), resuming where
        a broken stream stopped; a small one, or one to a worker without a bulk socket (or
        whose bulk socket cannot be reached), goes over the PutFile stream."""
        path = Path(path)
        size = path.stat().st_size
        fname = name or path.name
        offset = 0
        if size >= BULK_MIN_BYTES:
            # the checksum at the stream's end: only a paired worker's stream is sealed
            at_end = callable(checksum) and self._pin is not None
            text = "" if at_end else _text(checksum)
            for attempt in range(1, BULK_ATTEMPTS + 1):
                opened = self._open_file(sha256, fname, size, text, at_end)
                if opened is not None and at_end and not opened.checksum_at_end and not opened.present:  # fmt: skip
                    # an older worker: the checksum first, as it takes it (its ticket unused)
                    at_end, text = False, _text(checksum)
                    opened = self._open_file(sha256, fname, size, text)
                if opened is None:
                    break  # a worker from before OpenFile
                if opened.present:
                    if on_progress is not None:
                        on_progress(size)
                    return size
                offset = opened.offset
                if not self._bulk_fits(opened):
                    break
                try:
                    return send_file(
                        self._host, opened.bulk_port, opened.ticket, path, offset, size,
                        sealed=opened.bulk_sealed, timeout_s=self.timeout_s,
                        on_progress=on_progress, checksum_at_end=opened.checksum_at_end,
                    )  # fmt: skip
                except BulkRefused as e:
                    code = getattr(grpc.StatusCode, e.code, grpc.StatusCode.UNKNOWN)
                    raise WorkerCallError(
                        self.address, f"PutFile({fname})", code, e.details
                    ) from None
                except BulkUnavailable as e:
                    log.warning("worker %s: %s; files go over gRPC instead", self.address, e)
                    self.use_bulk = False
                    break
                except BulkBroken as e:
                    if attempt == BULK_ATTEMPTS:
                        raise WorkerCallError(
                            self.address, f"PutFile({fname})", grpc.StatusCode.UNAVAILABLE,
                            f"{e} ({attempt} tries; the worker keeps the bytes it has for the next)",
                        ) from None  # fmt: skip
                    log.warning("worker %s: %s; resuming", self.address, e)
        return self._put_stream(path, sha256, fname, offset, size, on_progress)

    def _open_file(
        self, sha256: str, name: str, size: int, checksum: str, at_end: bool = False
    ) -> pb.OpenFileReply | None:
        request = pb.OpenFileRequest(
            sha256=sha256, name=name, size=size, checksum=checksum, checksum_at_end=at_end
        )
        try:
            return self._stub.OpenFile(
                request,
                timeout=self.timeout_s, metadata=self._metadata(),
            )  # fmt: skip
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                return None
            raise WorkerCallError(
                self.address, f"OpenFile({name})", e.code(), e.details() or ""
            ) from None

    def _bulk_fits(self, opened: pb.OpenFileReply) -> bool:
        """Use the bulk socket only as safe as this client's channel: plain beside a plain
        token channel, sealed (its keys from a ticket only the pinned channel carried) beside a
        pinned one. A worker of an older Orchard (TLS on its bulk socket) gets PutFile."""
        if not (self.use_bulk and opened.bulk_port and opened.ticket) or opened.bulk_tls:
            return False
        if self._pin is not None:
            return opened.bulk_sealed
        return self._md is not None and not opened.bulk_sealed

    def _put_stream(
        self, path: Path, sha256: str, fname: str, offset: int, size: int,
        on_progress: Callable[[int], None] | None,
    ) -> int:  # fmt: skip
        """PutFile: the file from ``offset`` in CHUNK_BYTES chunks over the gRPC stream."""

        stopped: list[BaseException] = []  # raised by on_progress: ends the stream, kept

        def chunks() -> Iterator[pb.FileChunk]:
            with open(path, "rb") as f:
                f.seek(offset)
                at = offset
                while True:
                    data = f.read(CHUNK_BYTES)
                    last = at + len(data) >= size
                    yield pb.FileChunk(sha256=sha256, name=fname, offset=at, data=data, last=last)
                    at += len(data)
                    try:
                        if on_progress is not None:
                            on_progress(at)
                    except BaseException as e:  # noqa: BLE001 - re-raised once the call ends
                        stopped.append(e)
                        return  # the worker keeps what came, for a resume
                    if last or not data:
                        return

        timeout = self.timeout_s + SECONDS_PER_MIB * (size - offset) / 2**20
        try:
            reply = self._stub.PutFile(chunks(), timeout=timeout, metadata=self._metadata())
        except grpc.RpcError as e:
            if stopped:
                raise stopped[0] from None
            raise WorkerCallError(
                self.address, f"PutFile({fname})", e.code(), e.details() or ""
            ) from None
        if stopped:  # the last chunk went before the callback raised
            raise stopped[0]
        return reply.size

    def setup_job(
        self, job_toml: str, rank: int, world_size: int, peers: list[str], run_id: str,
        files: dict[str, str], group_token: str, mlx_hostfile: str = "",
        timeout_s: float = SETUP_TIMEOUT_S, peer_certs: list[str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        req = pb.SetupJobRequest(
            job_toml=job_toml, rank=rank, world_size=world_size, peers=peers, run_id=run_id,
            files=files, group_token=group_token, mlx_hostfile=mlx_hostfile,
            peer_certs=peer_certs or [], protocol_version=PROTOCOL_VERSION,
        )  # fmt: skip
        self.job_id = ""  # the previous job ends on the worker either way
        try:
            r, call = self._stub.SetupJob.with_call(req, timeout=timeout_s, metadata=self._md)
        except grpc.RpcError as e:
            raise WorkerCallError(self.address, "SetupJob", e.code(), e.details() or "") from None
        self.job_id = dict(call.trailing_metadata() or ()).get(JOB_HEADER, "")
        return {
            "train_items": r.train_items,
            "trainable_params": r.trainable_params,
            "message": r.message,
        }

    def step(
        self, step: int, learning_rate: float, timeout_s: float | None = None,
        shares: Sequence[int] = (), micro_batches: int = 0,
    ) -> StepResult:  # fmt: skip
        """``shares``: the step's split by rank (empty: equal); ``micro_batches``: how many
        this worker cuts its share into (0: run.grad_accum)."""
        req = pb.StepRequest(
            step=step, learning_rate=learning_rate, shares=shares, micro_batches=micro_batches
        )
        r = self._call("Step", req, timeout=timeout_s)
        return StepResult(
            r.step, r.loss_sum, r.tokens, r.grad_norm, r.compute_s, r.comm_s,
            r.peak_memory_bytes, r.skipped, r.loss_scale, r.work_tokens, r.grad_s,
            r.comm_hidden_s, r.group_loss_sum, r.group_tokens,
        )  # fmt: skip

    def evaluate(
        self, step: int, max_batches: int, timeout_s: float | None = None
    ) -> tuple[float, int]:
        r = self._call(
            "Evaluate", pb.EvaluateRequest(step=step, max_batches=max_batches), timeout=timeout_s
        )
        return r.loss_sum, r.tokens

    def get_state(
        self, step: int, adapter: bool = False, timeout_s: float | None = None,
        params_only: bool = False,
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:  # fmt: skip
        """This worker's state, or (``adapter``) its adapter files as uint8 tensors, or
        (``params_only``) its parameters and counters without the moments (an older worker
        sends the whole state)."""
        try:
            stream = self._stub.GetState(
                pb.GetStateRequest(step=step, adapter=adapter, params_only=params_only),
                timeout=timeout_s or self.timeout_s * 10,
                metadata=self._metadata(),
            )
            return decode_state(stream)
        except grpc.RpcError as e:
            raise WorkerCallError(self.address, "GetState", e.code(), e.details() or "") from None

    def put_state(
        self, meta: dict[str, Any], tensors: dict[str, np.ndarray], timeout_s: float | None = None
    ) -> int:
        try:
            reply = self._stub.PutState(
                encode_state(meta, tensors),
                timeout=timeout_s or self.timeout_s * 10,
                metadata=self._metadata(),
            )
        except grpc.RpcError as e:
            raise WorkerCallError(self.address, "PutState", e.code(), e.details() or "") from None
        return reply.step

    def metric_rows(self, timeout_s: float) -> Iterator[dict[str, Any]]:
        """Rows the worker reports on its own (logs, warnings) until ``timeout_s`` ends."""
        try:
            for row in self._stub.StreamMetrics(
                pb.MetricsRequest(), timeout=timeout_s, metadata=self._md
            ):
                yield json.loads(row.json)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise WorkerCallError(
                    self.address, "StreamMetrics", e.code(), e.details() or ""
                ) from None

    def regroup(
        self, rank: int, world_size: int, peers: list[str], group_token: str,
        peer_certs: list[str] | None = None, timeout_s: float = 90.0,
    ) -> dict[str, Any]:  # fmt: skip
        """The same job goes on as ``rank`` of ``world_size``: ``{"step", "regroup_s"}``.
        A worker of an older Orchard answers UNIMPLEMENTED (WorkerCallError.code)."""
        req = pb.RegroupRequest(rank=rank, world_size=world_size, peers=peers,
                                group_token=group_token, peer_certs=peer_certs or [])  # fmt: skip
        r = self._call("Regroup", req, timeout=timeout_s)
        return {"step": r.step, "regroup_s": r.regroup_s}

    def pull_state(
        self, step: int, params_from: int, moments: Sequence[tuple[int, int, int]],
        timeout_s: float = 60.0,
    ) -> dict[str, Any]:  # fmt: skip
        """The worker takes the group's state of ``step`` from its peers, worker to worker:
        the parameters and counters of rank ``params_from`` (-1: its own) and its moments
        as ``(rank, lo, hi)`` pieces. ``{"step", "pull_s", "received_bytes"}``; a peer that
        fails is FAILED_PRECONDITION naming it, and nothing changed on the worker."""
        req = pb.PullStateRequest(
            step=step, params_from=params_from,
            moments=[pb.StateSlice(rank=r, lo=lo, hi=hi) for r, lo, hi in moments],
        )  # fmt: skip
        r = self._call("PullState", req, timeout=timeout_s)
        return {"step": r.step, "pull_s": r.pull_s, "received_bytes": r.received_bytes}

    def stop(self, reason: str = "", timeout_s: float = 10.0) -> None:
        self._call("Stop", pb.StopRequest(reason=reason), timeout=timeout_s)

    def probe(
        self, payload: bytes = b"", run_benchmark: bool = False, benchmark_s: float = 0.0
    ) -> pb.ProbeReply:
        """One Probe call (no job needed): free memory, optional matmul benchmark, and the
        count of payload bytes the worker received."""
        req = pb.ProbeRequest(
            payload=payload, run_benchmark=run_benchmark, benchmark_s=benchmark_s,
            protocol_version=PROTOCOL_VERSION,
        )  # fmt: skip
        budget = benchmark_s if math.isfinite(benchmark_s) and benchmark_s > 0 else 0.0
        timeout = self.timeout_s + budget + SECONDS_PER_MIB * len(payload) / 2**20
        return self._call("Probe", req, timeout=timeout)


def _text(checksum: str | Callable[[], str]) -> str:
    """A checksum given as a function (see put_file): computed now."""
    return checksum() if callable(checksum) else checksum
