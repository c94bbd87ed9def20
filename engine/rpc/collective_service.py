"""The Collective servicer: checks the group token on every chunk and files it in a Mailbox.

A thin translator: all waiting and reassembly live in :class:`engine.dist.mailbox.Mailbox`.
Register it with :func:`add_collective_to_server` (zero-copy frames); the generated
``add_CollectiveServicer_to_server`` works too, at protobuf's copying speed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

from engine.dist.mailbox import Mailbox
from engine.rpc.channel import MAX_MESSAGE_BYTES, server_options
from engine.rpc.collective_wire import decode_frame
from engine.rpc.gen import orchard_pb2, orchard_pb2_grpc

log = logging.getLogger(__name__)

SERVICE = "orchard.v1.Collective"


class CollectiveServicer(orchard_pb2_grpc.CollectiveServicer):
    """Accepts chunks (protobuf messages or :class:`Frame`s) for one worker's mailbox."""

    def __init__(self, mailbox: Mailbox):
        self.mailbox = mailbox

    def Send(self, request: Any, context: grpc.ServicerContext) -> orchard_pb2.CollectiveAck:
        self._accept(request, context)
        return orchard_pb2.CollectiveAck(op_id=request.op_id)

    def Push(
        self, request_iterator: Iterator[Any], context: grpc.ServicerContext
    ) -> orchard_pb2.CollectiveAck:
        op_id = 0
        for chunk in request_iterator:
            self._accept(chunk, context)
            op_id = chunk.op_id
        return orchard_pb2.CollectiveAck(op_id=op_id)

    def _accept(self, chunk: Any, context: grpc.ServicerContext) -> None:
        if not self.mailbox.has_token():
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "collective chunk refused: no group is set up on this worker",
            )
        if not self.mailbox.token_ok(chunk.group_token):
            log.warning("refused a collective chunk from rank %d: wrong group token", chunk.src)
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"collective chunk refused: wrong group token (op {chunk.op_id} from rank {chunk.src})",
            )
        try:
            self.mailbox.put(
                chunk.op_id,
                chunk.src,
                chunk.part,
                chunk.offset,
                chunk.total,
                chunk.data,
                chunk.dtype,
            )
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"collective chunk refused: {e}")


def _parse(raw: bytes) -> Any:
    try:
        return decode_frame(raw)
    except ValueError as e:
        # grpc turns a deserializer failure into INTERNAL; the log says which frame was bad.
        log.warning("unparseable collective frame (%d bytes): %s", len(raw), e)
        raise


def collective_handler(servicer: CollectiveServicer) -> grpc.GenericRpcHandler:
    """The service's handlers with zero-copy frame parsing instead of protobuf messages."""
    ack = orchard_pb2.CollectiveAck.SerializeToString
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Send": grpc.unary_unary_rpc_method_handler(
                servicer.Send, request_deserializer=_parse, response_serializer=ack
            ),
            "Push": grpc.stream_unary_rpc_method_handler(
                servicer.Push, request_deserializer=_parse, response_serializer=ack
            ),
        },
    )


def add_collective_to_server(servicer: CollectiveServicer, server: grpc.Server) -> None:
    """Host the Collective service on an existing server (e.g. the worker's)."""
    server.add_generic_rpc_handlers((collective_handler(servicer),))


def serve_collective(
    mailbox: Mailbox,
    host: str = "127.0.0.1",
    port: int = 0,
    max_workers: int = 16,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> tuple[grpc.Server, int]:
    """A server hosting only the Collective service (tests, benchmarks, a dedicated process)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="orchard-coll"),
        options=server_options(max_message_bytes),
    )
    add_collective_to_server(CollectiveServicer(mailbox), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind the collective server to {host}:{port}")
    server.start()
    log.info("collective server listening on %s:%d", host, bound)
    return server, bound
