"""GrpcTransport: sends collective parts to peers over long-lived gRPC streams.

One channel and one client stream (``Collective/Push``) per peer, opened on first use and
kept: a frame on an open stream costs a queue hand-off, where a unary call per frame costs
call set-up and an executor hop on the server (measured ~3x the latency). Parts larger than
``piece_bytes`` go as several pieces. Streams carry a deadline (``stream_lifetime_s``) and
are replaced well before it; a stream that fails (peer refused, died, keepalive timed out)
wakes the local mailbox so the collective fails fast instead of waiting out its timeout.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence

import grpc

from engine.dist.mailbox import CollectiveError, Mailbox
from engine.dist.transport import Transport
from engine.rpc.channel import MAX_MESSAGE_BYTES, PIECE_BYTES, open_channel
from engine.rpc.collective_wire import encode_frame
from engine.rpc.gen import orchard_pb2

log = logging.getLogger(__name__)

PUSH_METHOD = "/orchard.v1.Collective/Push"
STREAM_LIFETIME_S = 3600.0  # deadline of one stream; replaced after a sixth of it
# close() lets the streams finish this long (in all), then cancels the rest: a stream to a
# frozen or vanished peer never finishes, and a worker shutting down must not wait on it.
CLOSE_DRAIN_S = 0.25
_CLOSE = None


class _PeerStream:
    """A client stream whose frames come from a queue (grpc's thread drains it)."""

    def __init__(self, call: grpc.StreamUnaryMultiCallable, lifetime_s: float, metadata):
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.opened = self.last_put = time.monotonic()
        self.closed = False
        self.future = call.future(self._frames(), timeout=lifetime_s, metadata=metadata)

    def _frames(self) -> Iterator[bytes]:
        while (item := self.queue.get()) is not _CLOSE:
            yield item

    def put(self, frame: bytes) -> None:
        self.last_put = time.monotonic()
        self.queue.put(frame)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put(_CLOSE)


class GrpcTransport(Transport):
    """Point-to-point sends to ``peers[rank]`` (host:port); receives come via ``mailbox``."""

    def __init__(
        self,
        rank: int,
        peers: Sequence[str],
        group_token: str,
        mailbox: Mailbox,
        timeout_s: float = 120.0,
        piece_bytes: int = PIECE_BYTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        metadata: Sequence[tuple[str, str]] = (),
        stream_lifetime_s: float = STREAM_LIFETIME_S,
        peer_certs: Sequence[str] = (),
    ):
        if not 0 <= rank < len(peers):
            raise ValueError(f"GrpcTransport: rank {rank} is outside a group of {len(peers)} peers")
        if not group_token:
            raise ValueError("GrpcTransport: the group token must not be empty")
        if piece_bytes + 1024 > max_message_bytes:
            raise ValueError(
                f"GrpcTransport: piece_bytes {piece_bytes} does not fit max_message_bytes {max_message_bytes}"
            )
        if peer_certs and len(peer_certs) != len(peers):
            raise ValueError(
                f"GrpcTransport: {len(peer_certs)} peer certificates for {len(peers)} peers"
            )
        self.rank, self.size = rank, len(peers)
        self.peer_certs = list(peer_certs)
        self.peers = list(peers)
        self.mailbox = mailbox
        self.timeout_s = timeout_s
        self.piece_bytes = piece_bytes
        self.max_message_bytes = max_message_bytes
        self.metadata = tuple(metadata) or None
        self.stream_lifetime_s = stream_lifetime_s
        self._token = group_token.encode()
        self._channels: dict[int, grpc.Channel] = {}
        self._streams: dict[int, _PeerStream] = {}
        self._lock = threading.Lock()
        self._error: CollectiveError | None = None
        self.pieces_sent = 0

    def _stream(self, dst: int) -> _PeerStream:
        stream = self._streams.get(dst)
        if stream is not None and time.monotonic() - stream.opened < self.stream_lifetime_s / 6:
            return stream
        if stream is not None:
            stream.close()  # its queued frames still go out; new ones use a fresh stream
        channel = self._channels.get(dst)
        if channel is None:
            channel = self._channels[dst] = open_channel(
                self.peers[dst],
                self.max_message_bytes,
                self.peer_certs[dst].encode("ascii") if self.peer_certs else None,
            )
        call = channel.stream_unary(
            PUSH_METHOD,
            request_serializer=None,  # frames are already serialized
            response_deserializer=orchard_pb2.CollectiveAck.FromString,
        )
        stream = self._streams[dst] = _PeerStream(call, self.stream_lifetime_s, self.metadata)
        stream.future.add_done_callback(lambda f, d=dst, s=stream: self._ended(f, d, s))
        return stream

    def _ended(self, future: grpc.Future, dst: int, stream: _PeerStream) -> None:
        if stream.closed and not future.cancelled() and future.exception() is None:
            return  # closed by us and drained: a normal end
        if future.cancelled() and stream.closed:
            return
        err = future.exception() if not future.cancelled() else None
        if isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            if time.monotonic() - stream.last_put > 60.0:
                return  # an idle stream reached its deadline: nothing was in flight
        if isinstance(err, grpc.Call):
            message = (
                f"send to rank {dst} ({self.peers[dst]}) failed: {err.code().name}: {err.details()}"
            )
        else:
            message = f"send to rank {dst} ({self.peers[dst]}) failed: {err or 'cancelled'}"
        error = CollectiveError(message)
        with self._lock:
            self._error = self._error or error
            if self._streams.get(dst) is stream:
                del self._streams[dst]
        log.info("%s", message)  # raised to the collective waiting on it, if any
        self.mailbox.fail(error, token=self._token)

    def send(self, dst: int, op_id: int, part: int, data: bytes | memoryview, dtype: str) -> None:
        if dst == self.rank or not 0 <= dst < self.size:
            raise ValueError(f"send: bad destination rank {dst} (I am {self.rank} of {self.size})")
        if self._error is not None:
            raise self._error
        stream = self._stream(dst)
        view = memoryview(data).cast("B")
        total = len(view)
        dt = dtype.encode()
        for offset in range(0, total, self.piece_bytes) if total else [0]:
            piece = view[offset : offset + self.piece_bytes]
            stream.put(encode_frame(self._token, op_id, self.rank, part, offset, total, piece, dt))
            self.pieces_sent += 1

    def recv(self, src: int, op_id: int, part: int) -> tuple[bytes | bytearray | memoryview, str]:
        return self.mailbox.take(op_id, src, part, self.timeout_s)

    def flush(self) -> None:
        """Raise the first send failure, if any (stream sends have no per-frame ack)."""
        if self._error is not None:
            raise self._error

    def close(self, drain_s: float = CLOSE_DRAIN_S) -> None:
        """End every stream: queued frames get ``drain_s`` seconds in all to go out (a
        healthy peer acks at once), then what is left is cancelled."""
        streams = list(self._streams.values())
        self._streams.clear()
        for stream in streams:
            stream.close()
        deadline = time.monotonic() + drain_s
        for stream in streams:
            try:
                stream.future.result(timeout=max(0.0, deadline - time.monotonic()))
            except grpc.FutureTimeoutError:
                log.info("a stream to a peer did not finish within %.2fs of close; cancelled",
                         drain_s)  # fmt: skip
                stream.future.cancel()
            except Exception:  # noqa: BLE001 - the peer may be gone already; closing anyway
                log.debug("stream to a peer ended with an error on close", exc_info=True)
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
