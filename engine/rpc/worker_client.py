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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine.machine import PROTOCOL_VERSION
from engine.rpc.auth import token_metadata
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
    ):
        """``channel``: an already authenticated channel (remote workers: pinned TLS with
        signed calls, engine/rpc/paired_client.py); else plain TCP with ``token``."""
        self.address = address
        self.timeout_s = timeout_s
        self._md = token_metadata(token) if channel is None else None
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

    def put_file(self, path: str | Path, sha256: str, name: str | None = None) -> int:
        """Stream a file in chunks; the worker verifies the hash. Returns the size it stored."""
        path = Path(path)
        size = path.stat().st_size
        fname = name or path.name

        def chunks() -> Iterator[pb.FileChunk]:
            with open(path, "rb") as f:
                offset = 0
                while True:
                    data = f.read(CHUNK_BYTES)
                    last = offset + len(data) >= size
                    yield pb.FileChunk(
                        sha256=sha256, name=fname, offset=offset, data=data, last=last
                    )
                    offset += len(data)
                    if last or not data:
                        return

        timeout = self.timeout_s + SECONDS_PER_MIB * size / 2**20
        try:
            reply = self._stub.PutFile(chunks(), timeout=timeout, metadata=self._metadata())
        except grpc.RpcError as e:
            raise WorkerCallError(
                self.address, f"PutFile({fname})", e.code(), e.details() or ""
            ) from None
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

    def step(self, step: int, learning_rate: float, timeout_s: float | None = None) -> StepResult:
        r = self._call(
            "Step", pb.StepRequest(step=step, learning_rate=learning_rate), timeout=timeout_s
        )
        return StepResult(
            r.step, r.loss_sum, r.tokens, r.grad_norm, r.compute_s, r.comm_s,
            r.peak_memory_bytes, r.skipped, r.loss_scale, r.comm_hidden_s,
        )  # fmt: skip

    def evaluate(
        self, step: int, max_batches: int, timeout_s: float | None = None
    ) -> tuple[float, int]:
        r = self._call(
            "Evaluate", pb.EvaluateRequest(step=step, max_batches=max_batches), timeout=timeout_s
        )
        return r.loss_sum, r.tokens

    def get_state(
        self, step: int, adapter: bool = False, timeout_s: float | None = None
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """This worker's state, or (``adapter``) its adapter files as uint8 tensors."""
        try:
            stream = self._stub.GetState(
                pb.GetStateRequest(step=step, adapter=adapter),
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
