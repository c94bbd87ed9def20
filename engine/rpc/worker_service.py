"""The Worker gRPC servicer: translates protobuf to the plain JobRunner/FileStore calls.

No training logic lives here. Errors map to status codes: a caller's mistake is
INVALID_ARGUMENT, a call out of order is FAILED_PRECONDITION, a job that is gone while the
worker is up (its process died, it was ended as an orphan) is ABORTED "job lost: ...",
anything else INTERNAL (logged).

SetupJob returns the job's id in the ``x-orchard-job`` trailing metadata; the client sends it
back on every later call, so a stale call of an earlier job never touches a newer one, and a
coordinator call cancelled mid-way (its client vanished) ends the job on a network worker
(engine/worker/orphans.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from engine.config import ConfigError
from engine.rpc.bulk import BulkServer
from engine.rpc.gen import orchard_pb2 as pb
from engine.rpc.gen import orchard_pb2_grpc
from engine.rpc.paired_auth import CLIENT_HEADER
from engine.rpc.state_stream import decode_state, encode_state
from engine.worker.checksum import parse_checksum
from engine.worker.errors import InvalidRequest, JobLost, OutOfOrder
from engine.worker.files import MAX_FILE_BYTES, FileStore, Piece, check_name, check_sha256
from engine.worker.job import JobRunner
from engine.worker.probe import SETTLE_S, check_protocol, probe

log = logging.getLogger(__name__)

JOB_HEADER = "x-orchard-job"  # the job id: SetupJob's trailing metadata, then every job call
JOB_LOST_PREFIX = "job lost:"  # ABORTED details start with it (WorkerCallError.job_lost)


def _fail(context: grpc.ServicerContext, method: str, e: Exception) -> None:
    if isinstance(e, JobLost):
        log.warning("%s: %s", method, e)
        context.abort(grpc.StatusCode.ABORTED, f"{JOB_LOST_PREFIX} {method}: {e}")
    if isinstance(e, OutOfOrder):
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{method}: {e}")
    if isinstance(e, (InvalidRequest, ConfigError, ValueError)):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{method}: {e}")
    log.exception("%s failed", method)
    context.abort(grpc.StatusCode.INTERNAL, f"{method}: {type(e).__name__}: {e}")


def _guard(method: Callable) -> Callable:
    """Run a handler, turning exceptions into a status with a message that names the call."""
    name = method.__name__

    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as e:  # noqa: BLE001 - every failure must reach the caller as a status
            if isinstance(e, grpc.RpcError) or context.code() is not None:
                raise
            _fail(context, name, e)

    wrapper.__name__ = name
    return wrapper


def _metadata(context: grpc.ServicerContext, key: str) -> str:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode(errors="replace")
    return ""


def _caller(context: grpc.ServicerContext) -> str:
    """The coordinator as log lines name it: its paired client id (if any) and address."""
    client = _metadata(context, CLIENT_HEADER)
    return f"{client[:64]} at {context.peer()}" if client else context.peer()


class WorkerServicer(orchard_pb2_grpc.WorkerServicer):
    def __init__(self, runner: JobRunner, store: FileStore, info: Callable[[], dict[str, Any]]):
        self._runner = runner
        self._store = store
        self._info = info
        self._bulk: BulkServer | None = None

    def attach_bulk(self, host: str, sealed: bool) -> BulkServer:
        """Offer the bulk socket (engine/rpc/bulk.py) on ``host``, taking sealed streams beside
        a TLS server; engine/rpc/server.py calls this, since it knows the host and whether."""
        self._bulk = BulkServer(self._store, host, sealed)
        return self._bulk

    @contextmanager
    def _coordinator_call(self, name: str, context: grpc.ServicerContext) -> Iterator[Any]:
        """Yield the call's job id; while the call runs it holds the job's lease, and if its
        client vanishes first the job ends (a network worker; nothing on a local one)."""
        job_id = _metadata(context, JOB_HEADER)
        with self._runner.coordinator_call(name, job_id, context.is_active) as ticket:
            if ticket is not None:
                context.add_callback(lambda: self._runner.guard.call_closed(ticket))
            yield job_id, ticket

    @_guard
    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.WorkerInfo:
        self._runner.renew(_metadata(context, JOB_HEADER))  # the coordinator's keep-alive
        runner = self._runner
        return pb.WorkerInfo(**self._info(), busy=runner.busy, ring_port=runner.ring_port.port)

    @_guard
    def PutFile(
        self, request_iterator: Iterator[pb.FileChunk], context: grpc.ServicerContext
    ) -> pb.PutFileReply:
        pieces = (Piece(c.sha256, c.name, c.offset, c.data, c.last) for c in request_iterator)
        digest, size = self._store.receive(pieces, on_cancel=context.cancel)
        return pb.PutFileReply(sha256=digest, size=size)

    @_guard
    def OpenFile(
        self, request: pb.OpenFileRequest, context: grpc.ServicerContext
    ) -> pb.OpenFileReply:
        sha256, name = check_sha256(request.sha256), check_name(request.name)
        if not 0 <= request.size <= MAX_FILE_BYTES:
            raise InvalidRequest(
                f"{name}: size {request.size}: expected 0 to {MAX_FILE_BYTES} bytes"
            )
        caller = _metadata(context, CLIENT_HEADER)  # authenticated by PairedAuthInterceptor
        checksum = parse_checksum(request.checksum)
        if self._store.has(sha256, caller):
            return pb.OpenFileReply(present=True)
        held = self._store.held(sha256)
        offset = held if held <= request.size else 0  # more than the file: not this file's
        if self._bulk is None:
            return pb.OpenFileReply(offset=offset)
        # the checksum after the bytes: only in a sealed stream, whose records prove the sender
        at_end = request.checksum_at_end and checksum is None and self._bulk.sealed
        port, ticket = self._bulk.expect(
            sha256, name, request.size, offset, checksum, caller, checksum_at_end=at_end
        )
        return pb.OpenFileReply(
            offset=offset, bulk_port=port, ticket=ticket, bulk_sealed=self._bulk.sealed,
            checksum_at_end=at_end,
        )  # fmt: skip

    @_guard
    def HasFile(self, request: pb.HasFileRequest, context: grpc.ServicerContext) -> pb.HasFileReply:
        caller = _metadata(context, CLIENT_HEADER)
        return pb.HasFileReply(present=self._store.has(request.sha256, caller))

    @_guard
    def SetupJob(
        self, request: pb.SetupJobRequest, context: grpc.ServicerContext
    ) -> pb.SetupJobReply:
        check_protocol(request.protocol_version)  # before any field: they may mean other things
        with self._coordinator_call("SetupJob", context) as (_, ticket):
            r = self._runner.setup(
                job_toml=request.job_toml,
                rank=request.rank,
                world=request.world_size,
                peers=list(request.peers),
                files=dict(request.files),
                run_id=request.run_id,
                group_token=request.group_token,
                mlx_hostfile=request.mlx_hostfile,
                peer_certs=list(request.peer_certs),
                coordinator=_caller(context),
                caller=_metadata(context, CLIENT_HEADER),
            )
            if ticket is not None:
                ticket.job_id = r.job_id  # a coordinator gone during setup ends the new job
        context.set_trailing_metadata(((JOB_HEADER, r.job_id),))
        return pb.SetupJobReply(
            train_items=r.train_items, trainable_params=r.trainable_params, message=r.message
        )

    @_guard
    def Step(self, request: pb.StepRequest, context: grpc.ServicerContext) -> pb.StepReply:
        with self._coordinator_call("Step", context) as (job_id, _):
            r = self._runner.step(request.step, request.learning_rate, job_id,
                                  list(request.shares), request.micro_batches)  # fmt: skip
        return pb.StepReply(
            step=r.step, loss_sum=r.loss_sum, tokens=r.tokens, grad_norm=r.grad_norm,
            compute_s=r.compute_s, comm_s=r.comm_s, peak_memory_bytes=r.peak_memory_bytes,
            skipped=r.skipped, loss_scale=r.loss_scale, work_tokens=r.work_tokens, grad_s=r.grad_s,
            comm_hidden_s=r.comm_hidden_s, group_loss_sum=r.group_loss_sum, group_tokens=r.group_tokens,
        )  # fmt: skip

    @_guard
    def Evaluate(
        self, request: pb.EvaluateRequest, context: grpc.ServicerContext
    ) -> pb.EvaluateReply:
        with self._coordinator_call("Evaluate", context) as (job_id, _):
            loss_sum, tokens = self._runner.evaluate(request.step, request.max_batches, job_id)
        return pb.EvaluateReply(loss_sum=loss_sum, tokens=tokens)

    def GetState(
        self, request: pb.GetStateRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StateChunk]:
        failure = None
        with self._coordinator_call("GetState", context) as (job_id, _):
            try:
                meta, tensors = self._runner.get_state(
                    request.step, request.adapter, job_id, request.params_only
                )
            except Exception as e:  # noqa: BLE001 - reported below, once the call has ended
                failure = e
            else:
                yield from encode_state(meta, tensors)
        if failure is not None:
            _fail(context, "GetState", failure)

    @_guard
    def PutState(
        self, request_iterator: Iterator[pb.StateChunk], context: grpc.ServicerContext
    ) -> pb.PutStateReply:
        with self._coordinator_call("PutState", context) as (job_id, _):
            meta, tensors = decode_state(request_iterator)
            return pb.PutStateReply(step=self._runner.put_state(meta, tensors, job_id))

    def StreamMetrics(
        self, request: pb.MetricsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.MetricRow]:
        for row in self._runner.metric_rows(context.is_active):
            yield pb.MetricRow(json=json.dumps(row).encode())

    @_guard
    def Stop(self, request: pb.StopRequest, context: grpc.ServicerContext) -> pb.StopReply:
        self._runner.stop(request.reason, _metadata(context, JOB_HEADER))
        return pb.StopReply()

    @_guard
    def Regroup(self, request: pb.RegroupRequest, context: grpc.ServicerContext) -> pb.RegroupReply:
        with self._coordinator_call("Regroup", context) as (job_id, _):
            r = self._runner.regroup(
                request.rank, request.world_size, list(request.peers), request.group_token,
                list(request.peer_certs), job_id,
            )  # fmt: skip
        return pb.RegroupReply(step=r["step"], regroup_s=r["regroup_s"])

    @_guard
    def PullState(
        self, request: pb.PullStateRequest, context: grpc.ServicerContext
    ) -> pb.PullStateReply:
        from engine.worker.peer_state import Slice

        slices = [Slice(s.rank, s.lo, s.hi) for s in request.moments]
        left = context.time_remaining()  # the fetches share the call's deadline
        timeout = left - 0.5 if left is not None and left < 1e6 else 60.0
        with self._coordinator_call("PullState", context) as (job_id, _):
            r = self._runner.pull_state(request.step, request.params_from, slices, job_id,
                                        timeout_s=max(0.5, timeout))  # fmt: skip
        return pb.PullStateReply(
            step=r["step"], pull_s=r["pull_s"], received_bytes=r["received_bytes"]
        )

    @_guard
    def Probe(self, request: pb.ProbeRequest, context: grpc.ServicerContext) -> pb.ProbeReply:
        left = context.time_remaining()  # the wait for start-up imports fits the deadline
        settle = SETTLE_S if left is None else min(SETTLE_S, left - request.benchmark_s - 1.0)
        r = probe(
            len(request.payload), request.run_benchmark, request.benchmark_s,
            request.protocol_version, settle_s=max(0.0, settle),
        )  # fmt: skip
        return pb.ProbeReply(
            free_memory_bytes=r.free_memory_bytes,
            matmul_gflops=r.matmul_gflops,
            received_bytes=r.received_bytes,
        )
