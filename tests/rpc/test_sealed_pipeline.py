"""The sealed stream's threaded data phase on real sockets: the same wire as one record at a
time, every failure raised after the records before it, and no thread left behind."""

import contextlib
import os
import socket
import threading

import pytest
import xxhash

from engine.rpc.sealed import RECORD_BYTES, SealBroken, Sealed
from engine.rpc.sealed_pipeline import receive_sealed, send_sealed

TICKET = bytes(range(32))
SIZE = 5 * RECORD_BYTES + 12345  # a batch and a bit: the last record is short


def _threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sealed-")]


@pytest.fixture(autouse=True)
def no_thread_left():
    yield
    assert not _threads(), f"threads outlived their transfer: {_threads()}"


@pytest.fixture
def blob(tmp_path):
    data = os.urandom(SIZE)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd, data
    os.close(fd)


def _drain(sock: socket.socket) -> bytes:
    out = bytearray()
    while chunk := sock.recv(1 << 20):
        out += chunk
    return bytes(out)


class _Peer(threading.Thread):
    """``fn`` on a thread; ``error``: what it raised (a sender whose peer went: OSError)."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.error = fn, None
        self.start()

    def run(self):
        try:
            self.fn()
        except OSError as e:
            self.error = e


def _receive(sock: socket.socket, size: int, ticket: bytes = TICKET):
    """receive_sealed into a list of written pieces; (pieces, the error or None)."""
    pieces: list[bytes] = []

    def write(view, release):
        pieces.append(bytes(view))
        release()

    try:
        receive_sealed(Sealed(sock, ticket, "worker"), size, RECORD_BYTES, write,
                       unblock=lambda: sock.shutdown(socket.SHUT_RD))  # fmt: skip
    except (OSError, EOFError) as e:
        return pieces, e
    return pieces, None


def test_the_wire_is_the_one_record_at_a_time_streams(blob):
    fd, data = blob
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    with a, b, c, d:
        seen: list[int] = []
        checksum = xxhash.xxh3_128()
        t = _Peer(lambda: (send_sealed(Sealed(a, TICKET, "coordinator"), fd, 100, SIZE,
                                                 seen.append, checksum), a.shutdown(socket.SHUT_WR)))  # fmt: skip
        piped = _drain(b)
        t.join()
        serial = Sealed(c, TICKET, "coordinator")
        t = _Peer(lambda: (
            [serial.send(data[i : min(i + RECORD_BYTES, SIZE)]) for i in range(100, SIZE, RECORD_BYTES)],
            c.shutdown(socket.SHUT_WR)))  # fmt: skip
        assert piped == _drain(d)  # same records, same nonces, same tags
        t.join()
    assert seen[-1] == SIZE and seen == sorted(seen)
    assert checksum.hexdigest() == xxhash.xxh3_128(data).hexdigest()  # the bytes before 100 too


def test_records_arrive_in_order_and_the_wrong_key_opens_none(blob):
    fd, data = blob
    for ticket, whole in ((TICKET, True), (bytes(32), False)):
        a, b = socket.socketpair()
        with a, b:
            t = _Peer(lambda a=a: send_sealed(Sealed(a, TICKET, "coordinator"), fd, 0,
                                                        SIZE, lambda _: None))  # fmt: skip
            pieces, error = _receive(b, SIZE, ticket)
            b.close()  # the sender's pending send fails: its thread ends too
            t.join()
            assert (t.error is None) == whole
        if whole:
            assert error is None and b"".join(pieces) == data
        else:
            assert isinstance(error, SealBroken) and pieces == []


def test_an_altered_record_ends_the_stream_after_the_records_before_it(blob):
    fd, data = blob
    a, b = socket.socketpair()
    with a, b:
        t = _Peer(lambda: (send_sealed(Sealed(a, TICKET, "coordinator"), fd, 0, SIZE,
                                                 lambda _: None), a.shutdown(socket.SHUT_WR)))  # fmt: skip
        wire = bytearray(_drain(b))
        t.join()
    record = 4 + RECORD_BYTES + 16
    wire[2 * record + 100] ^= 1  # a bit of the third record
    pieces, error = _replay(bytes(wire))
    assert isinstance(error, SealBroken) and "record 2" in str(error)
    assert b"".join(pieces) == data[: 2 * RECORD_BYTES]


def test_a_truncated_stream_keeps_the_whole_records_before_the_cut(blob):
    fd, data = blob
    a, b = socket.socketpair()
    with a, b:
        t = _Peer(lambda: send_sealed(Sealed(a, TICKET, "coordinator"), fd, 0, SIZE,
                                                lambda _: None))  # fmt: skip
        wire = _drain_some(b, 3 * (4 + RECORD_BYTES + 16) + 1000)
        b.close()
        t.join()  # the sender's send fails (the peer went): the sealer is joined all the same
        assert isinstance(t.error, BrokenPipeError)
    pieces, error = _replay(wire)
    assert isinstance(error, EOFError) and b"".join(pieces) == data[: 3 * RECORD_BYTES]


def _replay(wire: bytes):
    """``wire`` sent, then the end of the stream: what _receive made of it."""
    a, b = socket.socketpair()

    def send() -> None:
        with contextlib.suppress(OSError):  # the receiver stopped reading and closed
            a.sendall(wire)
            a.shutdown(socket.SHUT_WR)

    with a, b:
        t = _Peer(send)
        out = _receive(b, SIZE)
        b.close()
        t.join()
    return out


def _drain_some(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        out += sock.recv(n - len(out))
    return bytes(out)


class Stop(Exception):
    pass


def test_the_sender_stops_on_its_callback_with_batches_still_to_seal(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(8 * 4 * RECORD_BYTES))  # more batches than slots

    def stop_at(pos: int) -> None:
        raise Stop("the coordinator stops")

    a, b = socket.socketpair()
    fd = os.open(path, os.O_RDONLY)
    try:
        with a, b:
            t = _Peer(lambda: _drain(b))
            with pytest.raises(Stop):
                send_sealed(Sealed(a, TICKET, "coordinator"), fd, 0, path.stat().st_size, stop_at)
            assert not _threads()  # the sealer, waiting for a free buffer, was woken and joined
            a.shutdown(socket.SHUT_WR)
            t.join()
    finally:
        os.close(fd)


def test_a_failed_write_wakes_the_opener_waiting_for_the_next_record():
    a, b = socket.socketpair()
    with a, b:
        sender = Sealed(a, TICKET, "coordinator")
        sender.send(b"x" * 1000)  # one record, and the stream stays open

        def write(view, release):
            raise Stop("disk full")

        with pytest.raises(Stop, match="disk full"):
            receive_sealed(Sealed(b, TICKET, "worker"), SIZE, RECORD_BYTES, write,
                           unblock=lambda: b.shutdown(socket.SHUT_RD))  # fmt: skip
        assert not _threads()  # the opener, in a receive, was woken and joined


def test_a_file_shorter_than_announced_is_named(blob):
    fd, _ = blob
    a, b = socket.socketpair()
    with a, b:
        t = _Peer(lambda: _drain(b))
        with pytest.raises(EOFError, match=f"ended at byte {SIZE}, expected {SIZE + 1}"):
            send_sealed(Sealed(a, TICKET, "coordinator"), fd, 0, SIZE + 1, lambda _: None)
        a.shutdown(socket.SHUT_WR)
        t.join()


def test_an_empty_record_ends_the_stream_as_a_plain_streams_end_does():
    a, b = socket.socketpair()
    with a, b:
        sender = Sealed(a, TICKET, "coordinator")
        sender.send(b"x" * 1000)
        sender.send(b"")
        pieces, error = _receive(b, SIZE)
    assert isinstance(error, EOFError) and "empty record 1000 bytes into" in str(error)
    assert pieces == [b"x" * 1000]
