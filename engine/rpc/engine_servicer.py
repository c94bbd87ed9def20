"""The Engine service on the wire: a thin translator to ``engine.service.EngineService``.

Served on the engine folder's Unix socket (or 127.0.0.1), every call checked against the
connection file's key by the same interceptor the workers use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent import futures
from typing import TYPE_CHECKING

import grpc

from engine.rpc.auth import TokenInterceptor
from engine.rpc.engine_wire import event_to_pb, run_to_pb, status_to_pb
from engine.rpc.gen import engine_pb2 as pb
from engine.rpc.gen import engine_pb2_grpc

if TYPE_CHECKING:
    from engine.service.service import EngineService

log = logging.getLogger(__name__)

MAX_WATCHERS = 8  # each Watch holds a server thread; unary calls keep the rest
POLL_S = 1.0  # how often an idle Watch looks whether its client is still there
OPTIONS = [
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
]


class EngineServicer(engine_pb2_grpc.EngineServicer):
    def __init__(self, service: EngineService):
        self._service = service

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.EngineStatus:
        return status_to_pb(self._service.status())

    def StartRun(self, request: pb.StartRunRequest, context: grpc.ServicerContext) -> pb.RunInfo:
        from engine.service.service import BadRequest, EngineBusy, EngineClosing

        try:
            info = self._service.start(request.job_toml, request.resume_from, request.client)
        except BadRequest as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except EngineBusy as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except EngineClosing as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        return run_to_pb(info)

    def StopRun(self, request: pb.StopRunRequest, context: grpc.ServicerContext) -> pb.StopRunReply:
        info = self._service.stop(request.reason)
        return pb.StopRunReply(stopping=info is not None, run_id=info.run_id if info else "")

    def Watch(
        self, request: pb.WatchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.EventBatch]:
        from engine.service.service import EngineClosing

        if self._service.status().clients >= MAX_WATCHERS:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{MAX_WATCHERS} clients are attached already; close one first",
            )
        try:
            watcher = self._service.watch(request.client, request.history)
        except EngineClosing as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        context.add_callback(lambda: self._service.unwatch(watcher))
        try:
            while context.is_active():
                items = watcher.get(POLL_S)
                if items:
                    msgs = [m for m in map(event_to_pb, items) if m is not None]
                    yield pb.EventBatch(events=msgs)
                elif watcher.closed:
                    break
            if watcher.overflowed:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "events were not read in time")
        finally:
            self._service.unwatch(watcher)

    def Release(self, request: pb.ReleaseRequest, context: grpc.ServicerContext) -> pb.ReleaseReply:
        return pb.ReleaseReply(exiting=self._service.release(request.client))


def serve_engine(service: EngineService, address: str, key: str) -> tuple[grpc.Server, str]:
    """Serve ``service`` on ``address`` ("unix:/path" or "127.0.0.1:0"); returns the server
    and the address clients dial (the port filled in)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=MAX_WATCHERS + 4, thread_name_prefix="engine-rpc"),
        interceptors=[TokenInterceptor(key, open_prefixes=())],
        options=OPTIONS,
    )
    engine_pb2_grpc.add_EngineServicer_to_server(EngineServicer(service), server)
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"could not serve the engine on {address}")
    server.start()
    if not address.startswith("unix:"):
        address = f"{address.rsplit(':', 1)[0]}:{bound}"
    log.info("engine serving on %s", address)
    return server, address
