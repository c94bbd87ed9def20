"""One gRPC server per worker process: Worker + Collective + the standard health service.

Message sizes are bounded on both sides (a caller cannot make a worker buffer an unbounded
message), keepalive notices a dead peer within seconds, and stop() drains calls gracefully.
"""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from engine.rpc.auth import TokenInterceptor
from engine.rpc.bulk import BulkServer
from engine.rpc.channel import channel_options, server_options
from engine.rpc.collective_service import CollectiveServicer, add_collective_to_server
from engine.rpc.gen import orchard_pb2_grpc
from engine.trust.responder import PairingResponder

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # files, state and collectives travel in chunks far below this
CHUNK_BYTES = 1024 * 1024  # the size the clients stream files and state in
# The worker's limits: files and state arrive in 1 MiB chunks, collectives in 4 MiB pieces;
# large files go over the bulk socket (engine/rpc/bulk.py), which reads no more than the size
# OpenFile announced.
SERVER_OPTIONS: list[tuple[str, Any]] = server_options(MAX_MESSAGE_BYTES)
CHANNEL_OPTIONS: list[tuple[str, Any]] = channel_options(MAX_MESSAGE_BYTES)
SERVICE_NAMES = ("orchard.v1.Worker", "orchard.v1.Collective")


@dataclass
class RunningServer:
    """A started server, the port it really bound, and its health servicer."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    bulk: BulkServer | None = None

    def stop(self, grace_s: float = 2.0) -> None:
        """Refuse new calls, let running ones finish for ``grace_s``, then cancel the rest."""
        self.health.enter_graceful_shutdown()
        if self.bulk is not None:
            self.bulk.close()
        self.server.stop(grace_s).wait(grace_s + 1.0)

    def wait(self, timeout: float | None = None) -> bool:
        return self.server.wait_for_termination(timeout)


def serve(
    worker: orchard_pb2_grpc.WorkerServicer | None,
    collective: CollectiveServicer | None,
    token: str,
    host: str = "127.0.0.1",
    port: int = 0,
    max_workers: int = 16,
    *,
    credentials: grpc.ServerCredentials | None = None,
    auth: grpc.ServerInterceptor | None = None,
    pairing: PairingResponder | None = None,
) -> RunningServer:
    """Start serving on ``host:port`` (port 0 picks a free one) and return the bound port.

    Local workers: plain TCP on loopback, ``token`` checked on every call. Remote workers:
    ``credentials`` (TLS with the worker's identity), ``auth`` (the paired-call interceptor,
    which replaces the token) and the Pairing service over ``pairing``.

    The Worker service's bulk socket (engine/rpc/bulk.py) listens on the same host: plain
    TCP beside a plain server, sealed streams (engine/rpc/sealed.py) beside a TLS one."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="orchard-rpc"),
        interceptors=[auth if auth is not None else TokenInterceptor(token)],
        options=SERVER_OPTIONS,
    )
    if pairing is not None:
        from engine.rpc.pairing_service import add_pairing_to_server

        add_pairing_to_server(server, pairing)
    bulk = None
    if worker is not None:
        orchard_pb2_grpc.add_WorkerServicer_to_server(worker, server)
        attach = getattr(worker, "attach_bulk", None)
        if attach is not None:
            bulk = attach(host, sealed=credentials is not None)
    if collective is not None:
        add_collective_to_server(collective, server)  # zero-copy frames (engine/dist's servicer)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{host}:{port}"
    if credentials is not None:
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"could not bind a gRPC server to {host}:{port}")
    server.start()
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gRPC server listening on %s:%d", host, bound)
    return RunningServer(server=server, port=bound, health=health_servicer, bulk=bulk)
