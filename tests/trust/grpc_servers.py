"""Real TLS gRPC servers on 127.0.0.1 for the pairing tests.

``serve_worker`` is a worker's network face: Pairing + a minimal Worker service (Describe
only: the interceptor, not the Worker service, is under test) behind PairedAuthInterceptor.
``serve_relay`` is a man in the middle with its own certificate that forwards pairing calls.
"""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from engine.rpc.gen import orchard_pb2, orchard_pb2_grpc
from engine.rpc.paired_auth import PairedAuthInterceptor
from engine.rpc.pairing_service import add_pairing_to_server
from engine.rpc.tls import pinned_channel, server_credentials
from engine.trust import Identity, PairingResponder


class DescribeOnly(orchard_pb2_grpc.WorkerServicer):
    def __init__(self, worker_id: str):
        self.worker_id = worker_id

    def Describe(
        self, request: orchard_pb2.DescribeRequest, context: grpc.ServicerContext
    ) -> orchard_pb2.WorkerInfo:
        return orchard_pb2.WorkerInfo(worker_id=self.worker_id, hostname="test-worker")


def _start(server: grpc.Server, identity: Identity) -> int:
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(identity))
    assert port, "could not bind a TLS port on 127.0.0.1"
    server.start()
    return port


def serve_worker(responder: PairingResponder) -> tuple[grpc.Server, int]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[PairedAuthInterceptor(responder.clients)],
        options=[("grpc.max_receive_message_length", 1 << 20)],
    )
    add_pairing_to_server(server, responder)
    orchard_pb2_grpc.add_WorkerServicer_to_server(DescribeOnly(responder.worker_id), server)
    return server, _start(server, responder.identity)


class Relay(orchard_pb2_grpc.PairingServicer):
    """Forwards pairing to the real worker, rewriting the fingerprint it saw to the real one."""

    def __init__(self, target: str, target_cert: bytes, real_fp: str):
        self.stub = orchard_pb2_grpc.PairingStub(pinned_channel(target, target_cert))
        self.real_fp = real_fp

    def PairStart(self, request, context):  # type: ignore[no-untyped-def]
        request.worker_fingerprint = self.real_fp
        return self._forward(self.stub.PairStart, request, context)

    def PairFinish(self, request, context):  # type: ignore[no-untyped-def]
        return self._forward(self.stub.PairFinish, request, context)

    @staticmethod
    def _forward(call, request, context):  # type: ignore[no-untyped-def]
        try:
            return call(request, timeout=5)
        except grpc.RpcError as e:
            context.abort(e.code(), e.details())


def serve_relay(
    identity: Identity, target: str, target_cert: bytes, real_fp: str
) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    orchard_pb2_grpc.add_PairingServicer_to_server(Relay(target, target_cert, real_fp), server)
    return server, _start(server, identity)
