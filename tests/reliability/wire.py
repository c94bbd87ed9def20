"""A raw gRPC caller for the wire tests: bytes in, bytes out, any method, any metadata.

The generated stubs cannot send malformed messages; identity serializers can.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine.rpc.auth import token_metadata
from engine.rpc.gen import orchard_pb2 as pb

# Neither side of this channel limits sizes: the server's own limit is what is under test.
UNLIMITED = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
TIMEOUT_S = 20.0


def _ident(b: bytes) -> bytes:
    return b


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    reply: bytes | list[bytes] | None = None


def methods(service: str) -> list[tuple[str, bool, bool]]:
    """(full method, request streaming, response streaming) for every rpc of ``service``."""
    desc = pb.DESCRIPTOR.services_by_name[service]
    return [
        (f"/{desc.full_name}/{m.name}", m.client_streaming, m.server_streaming)
        for m in desc.methods
    ]


class RawCaller:
    def __init__(self, address: str, token: str | None):
        self.channel = grpc.insecure_channel(address, options=UNLIMITED)
        self.md = token_metadata(token) if token is not None else ()

    def close(self) -> None:
        self.channel.close()

    def call(
        self, method: str, request: bytes | Iterable[bytes], streaming_in: bool = False,
        streaming_out: bool = False, metadata: tuple | None = None,
    ) -> Outcome:  # fmt: skip
        md = self.md if metadata is None else metadata
        kind = {
            (False, False): self.channel.unary_unary,
            (True, False): self.channel.stream_unary,
            (False, True): self.channel.unary_stream,
            (True, True): self.channel.stream_stream,
        }[(streaming_in, streaming_out)]
        stub = kind(method, request_serializer=_ident, response_deserializer=_ident)
        if streaming_in and isinstance(request, bytes):
            request = [request]
        try:
            reply = stub(iter(request) if streaming_in else request, timeout=TIMEOUT_S, metadata=md)
            if streaming_out:
                reply = list(reply)
        except grpc.RpcError as e:
            return Outcome(e.code(), e.details() or "")
        return Outcome(grpc.StatusCode.OK, "", reply)

    def serving(self) -> bool:
        """The worker still answers its health check and an authenticated Describe."""
        health = health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(service="orchard.v1.Worker"), timeout=TIMEOUT_S
        )
        describe = self.call("/orchard.v1.Worker/Describe", b"")
        return (
            health.status == health_pb2.HealthCheckResponse.SERVING
            and describe.code == grpc.StatusCode.OK
        )
