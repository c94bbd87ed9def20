"""The gRPC data plane on real sockets: token refusal, chunking under the message limit."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from engine.dist.mailbox import CollectiveError, Mailbox
from engine.rpc.collective_client import GrpcTransport
from engine.rpc.collective_service import serve_collective
from engine.rpc.gen import orchard_pb2, orchard_pb2_grpc


@pytest.fixture
def server():
    box = Mailbox("right-token")
    srv, port = serve_collective(box, max_message_bytes=256 * 1024)
    yield box, f"127.0.0.1:{port}"
    srv.stop(0.5).wait(2)


def _transport(addr, token, box, **kw):
    # rank 1 of 2 sends to rank 0 (the server under test)
    return GrpcTransport(1, [addr, "127.0.0.1:1"], token, box, timeout_s=10, **kw)


def test_wrong_group_token_is_refused(server):
    box, addr = server
    mine = Mailbox("wrong-token")
    t = _transport(addr, "wrong-token", mine)
    t.send(0, 1, 0, np.ones(10, np.float32).tobytes(), "float32")
    # the refusal ends the stream and wakes whatever this rank is waiting for
    refused = "PERMISSION_DENIED: collective chunk refused: wrong group token"
    with pytest.raises(CollectiveError, match=refused):
        mine.take(1, 0, 0, timeout=10)
    with pytest.raises(CollectiveError, match=refused):
        t.flush()
    assert box.pending() == 0
    t.close()


def test_generated_stub_interoperates_and_is_refused_without_token(server):
    box, addr = server
    with grpc.insecure_channel(addr) as ch:
        stub = orchard_pb2_grpc.CollectiveStub(ch)
        ok = orchard_pb2.CollectiveChunk(
            group_token="right-token",
            op_id=4,
            src=1,
            part=2,
            total=8,
            data=b"\0" * 8,
            dtype="float32",
        )
        assert stub.Send(ok, timeout=5).op_id == 4
        assert bytes(box.take(4, 1, 2, timeout=5)[0]) == b"\0" * 8
        with pytest.raises(grpc.RpcError) as err:
            stub.Push(iter([orchard_pb2.CollectiveChunk(op_id=5, src=1, total=0)]), timeout=5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_part_over_the_message_limit_is_chunked(server):
    box, addr = server
    t = _transport(
        addr,
        "right-token",
        Mailbox("right-token"),
        piece_bytes=64 * 1024,
        max_message_bytes=256 * 1024,
    )
    payload = np.random.default_rng(0).standard_normal(300_000).astype(np.float32)  # 1.2 MB
    t.send(0, 9, 1, memoryview(payload).cast("B"), "float32")
    assert t.pieces_sent == -(-payload.nbytes // (64 * 1024))  # 19 pieces
    data, dtype = box.take(9, 1, 1, timeout=5)
    assert dtype == "float32" and np.array_equal(np.frombuffer(data, np.float32), payload)
    t.close()


def test_server_enforces_its_message_limit(server):
    _, addr = server
    # a client that does not chunk: one 1 MiB message against a 256 KiB server limit
    mine = Mailbox("right-token")
    t = _transport(addr, "right-token", mine, piece_bytes=1 << 20, max_message_bytes=2 << 20)
    t.send(0, 1, 0, bytes(1 << 20), "float32")
    with pytest.raises(CollectiveError, match="RESOURCE_EXHAUSTED"):
        mine.take(1, 0, 0, timeout=10)
    t.close()


def test_dead_peer_fails_fast_not_after_the_timeout():
    box = Mailbox("tok")
    t = GrpcTransport(0, ["127.0.0.1:1", "127.0.0.1:9"], "tok", box, timeout_s=3)
    t.send(1, 1, 0, b"\0" * 4, "float32")
    with pytest.raises(CollectiveError, match="send to rank 1"):
        box.take(1, 1, 0, timeout=30)  # woken by the failed send, well before 30 s
    t.close()
