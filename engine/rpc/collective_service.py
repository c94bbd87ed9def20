"""The Collective servicer: checks the group token on every chunk and files it in a Mailbox.

A thin translator: all waiting and reassembly live in :class:`engine.dist.mailbox.Mailbox`.
Register it with :func:`add_collective_to_server` (zero-copy frames); the generated
``add_CollectiveServicer_to_server`` works too, at protobuf's copying speed.

FetchState lets a peer of the same group (its group token, as every chunk carries) read
part of this worker's state: a worker that joins takes the group's state from a peer, not
through the coordinator (engine/worker/peer_state.py says what is served).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc

from engine.dist.mailbox import Mailbox
from engine.rpc.channel import MAX_MESSAGE_BYTES, server_options
from engine.rpc.collective_wire import decode_frame
from engine.rpc.gen import orchard_pb2, orchard_pb2_grpc

log = logging.getLogger(__name__)

SERVICE = "orchard.v1.Collective"
StateSource = Callable[[int, bool, int, int], tuple[dict[str, Any], dict[str, Any]]]


class CollectiveServicer(orchard_pb2_grpc.CollectiveServicer):
    """Accepts chunks (protobuf messages or :class:`Frame`s) for one worker's mailbox."""

    def __init__(self, mailbox: Mailbox, state_source: StateSource | None = None):
        """``state_source(step, params, lo, hi) -> (meta, tensors)`` serves FetchState (the
        worker's JobRunner.serve_state); None refuses it."""
        self.mailbox = mailbox
        self.state_source = state_source

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

    def FetchState(
        self, request: orchard_pb2.FetchStateRequest, context: grpc.ServicerContext
    ) -> Iterator[orchard_pb2.StateChunk]:
        from engine.rpc.state_stream import encode_state  # it imports the server module
        from engine.worker.errors import InvalidRequest, JobLost, OutOfOrder

        what = f"state fetch from rank {request.src}"
        self._check_token(request.group_token, what, context)
        if self.state_source is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{what} refused: no state here")
        try:
            meta, tensors = self.state_source(request.step, request.params, request.lo, request.hi)
        except (OutOfOrder, JobLost) as e:  # no job, another step; its process died
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"FetchState: {e}")
        except (InvalidRequest, ValueError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"FetchState: {e}")
        log.info("serving %s: step %d, %smoments [%d, %d)", what, request.step,
                 "parameters and " if request.params else "", request.lo, request.hi)  # fmt: skip
        yield from encode_state(meta, tensors)

    def _check_token(
        self, token: str, what: str, context: grpc.ServicerContext, about: str = ""
    ) -> None:
        """Only this worker's current group may send it pieces or read its state."""
        if not self.mailbox.has_token():
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{what} refused: no group is set up on this worker",
            )
        if not self.mailbox.token_ok(token):
            log.warning("refused a %s%s: wrong group token", what, about)
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"{what} refused: wrong group token{about}"
            )

    def _accept(self, chunk: Any, context: grpc.ServicerContext) -> None:
        about = f" (op {chunk.op_id} from rank {chunk.src})"
        self._check_token(chunk.group_token, "collective chunk", context, about)
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
            "FetchState": grpc.unary_stream_rpc_method_handler(
                servicer.FetchState,
                request_deserializer=orchard_pb2.FetchStateRequest.FromString,
                response_serializer=orchard_pb2.StateChunk.SerializeToString,
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
