"""The bulk socket on real sockets: tickets, sealed streams, refusals, limits and resumes."""

import hashlib
import os
import socket
import threading
import time
import types

import pytest

from engine.rpc import bulk, sealed
from engine.rpc.bulk import MAGIC, BulkBroken, BulkRefused, BulkServer, BulkUnavailable, send_file
from engine.worker.files import FileStore


@pytest.fixture
def blob(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 12345)
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    return path, data, hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(tmp_path):
    store = FileStore(tmp_path / "worker")
    srv = BulkServer(store, "127.0.0.1")
    yield srv, store
    srv.close()


def _files(store: FileStore) -> list:
    return [p for p in store.files.rglob("*") if p.is_file()]


def _raw(port: int, hello: bytes, payload: bytes = b"") -> str:
    """A hand-made client: the hello; after GO some bytes and the end; every line the worker
    sent back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(hello)
        out = s.recv(4096)
        if out == b"GO\n":
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(4096):
                out += chunk
    return out.decode().strip()


def test_a_file_arrives_verified_and_its_ticket_works_once(server, blob):
    srv, store = server
    path, data, digest = blob
    port, ticket = srv.expect(digest, "model.safetensors", len(data), 0)
    seen = []
    size = send_file("127.0.0.1", port, ticket, path, 0, len(data), sealed=False, timeout_s=30,
                     on_progress=seen.append)  # fmt: skip
    assert size == len(data) and seen[-1] == len(data)
    assert store.path_of(digest).read_bytes() == data
    with pytest.raises(BulkRefused) as e:  # the same ticket again
        send_file("127.0.0.1", port, ticket, path, 0, len(data), sealed=False, timeout_s=30)
    assert e.value.code == "UNAUTHENTICATED" and "ticket" in e.value.details


def test_a_wrong_hash_is_refused_and_nothing_is_kept(server, blob):
    srv, store = server
    path, data, _ = blob
    port, ticket = srv.expect("0" * 64, "model.safetensors", len(data), 0)
    with pytest.raises(BulkRefused) as e:
        send_file("127.0.0.1", port, ticket, path, 0, len(data), sealed=False, timeout_s=30)
    assert e.value.code == "INVALID_ARGUMENT" and "sha256 mismatch" in e.value.details
    assert not _files(store) and store.held("0" * 64) == 0


def test_the_checksum_checks_the_stream_and_the_file_is_the_callers(server, blob):
    import xxhash

    srv, store = server
    path, data, digest = blob
    good = xxhash.xxh3_128(data).hexdigest()
    port, ticket = srv.expect(digest, "model.safetensors", len(data), 0, "0" * 32, "laptop")
    with pytest.raises(BulkRefused) as e:
        send_file("127.0.0.1", port, ticket, path, 0, len(data), sealed=False, timeout_s=30)
    assert e.value.code == "INVALID_ARGUMENT" and "xxh3-128 mismatch" in e.value.details
    assert not _files(store) and store.held(digest) == 0
    port, ticket = srv.expect(digest, "model.safetensors", len(data), 0, good, "laptop")
    assert send_file("127.0.0.1", port, ticket, path, 0, len(data), sealed=False,
                     timeout_s=30) == len(data)  # fmt: skip
    assert store.path_of(digest, "laptop").read_bytes() == data and not store.has(digest)


def test_without_a_valid_ticket_nothing_touches_the_disk(server, blob, monkeypatch):
    srv, store = server
    _, data, digest = blob
    port, ticket = srv.expect(digest, "model.safetensors", len(data), 0)
    assert "UNAUTHENTICATED" in _raw(port, MAGIC + os.urandom(32), data[:1000])
    assert "not an Orchard bulk stream" in _raw(port, b"GET / HTTP/1.1\r\n" + b"x" * 20)
    monkeypatch.setattr(bulk, "TICKET_TTL_S", 0.0)
    port, late = srv.expect(digest, "model.safetensors", len(data), 0)
    time.sleep(0.01)
    assert "UNAUTHENTICATED" in _raw(port, MAGIC + late, data)  # expired
    assert not _files(store) and not store.partials.exists()


def test_a_silent_connection_is_dropped_before_the_ticket(server, monkeypatch):
    srv, _ = server
    monkeypatch.setattr(bulk, "HELLO_TIMEOUT_S", 0.2)
    port, _ = srv.expect("1" * 64, "x.bin", 10, 0)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed by the worker, not by this end
        assert time.monotonic() - t0 < 5


def test_a_stream_gone_silent_ends_at_the_idle_timeout_and_keeps_its_bytes(server, blob, monkeypatch):  # fmt: skip
    srv, store = server
    _, data, digest = blob
    monkeypatch.setattr(bulk, "IDLE_TIMEOUT_S", 0.3)
    port, ticket = srv.expect(digest, "model.safetensors", len(data), 0)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(MAGIC + ticket)
        assert s.recv(100) == b"GO\n"
        s.sendall(data[:1000])  # and then nothing, the connection open
        t0 = time.monotonic()
        assert s.recv(100) == b""  # the worker gave up on it
        assert time.monotonic() - t0 < 5
    assert store.held(digest) == 1000 and not store.has(digest)


def test_a_worker_gone_silent_fails_the_sender_at_its_timeout(blob, monkeypatch):
    path, data, _ = blob
    monkeypatch.setattr(bulk, "LATE_REPLY_S", 0.1)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    held = []

    def silent_worker() -> None:  # takes the ticket, says GO, then reads nothing more
        conn, _ = listener.accept()
        held.append(conn)
        conn.recv(len(MAGIC) + 32)
        conn.sendall(b"GO\n")

    threading.Thread(target=silent_worker, daemon=True).start()
    t0 = time.monotonic()
    with listener, pytest.raises(BulkBroken):
        send_file("127.0.0.1", listener.getsockname()[1], os.urandom(32), path, 0, len(data),
                  sealed=False, timeout_s=0.5)  # fmt: skip
    assert time.monotonic() - t0 < 10
    for conn in held:
        conn.close()


def test_a_broken_stream_resumes_from_the_bytes_kept(server, blob):
    srv, store = server
    path, data, digest = blob
    port, ticket = srv.expect(digest, "model.safetensors", len(data), 0)
    assert _raw(port, MAGIC + ticket, data[:1_000_000]) == "GO"  # then cut: bytes kept
    deadline = time.monotonic() + 10
    while store.held(digest) != 1_000_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.held(digest) == 1_000_000 and not store.has(digest)
    port, ticket = srv.expect(digest, "model.safetensors", len(data), 1_000_000)
    assert send_file("127.0.0.1", port, ticket, path, 1_000_000, len(data), sealed=False,
                     timeout_s=30) == len(data)  # fmt: skip
    assert store.path_of(digest).read_bytes() == data


def test_the_worker_reads_no_more_than_the_size_announced(server):
    srv, store = server
    data = b"w" * 5000
    digest = hashlib.sha256(data).hexdigest()
    port, ticket = srv.expect(digest, "small.bin", len(data), 0)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(MAGIC + ticket)
        assert s.recv(4096) == b"GO\n"
        s.sendall(data + b"trailing bytes past the size")
        try:
            reply = s.recv(4096).decode()
        except ConnectionResetError:  # the unread trailing bytes may reset it after the reply
            reply = "OK 5000 (reset)"
    assert reply.startswith("OK 5000")
    assert store.path_of(digest).read_bytes() == data


def test_a_name_that_leaves_the_cache_is_refused(server, blob):
    srv, store = server
    _, data, digest = blob
    port, ticket = srv.expect(digest, "../escape.bin", len(data), 0)
    out = _raw(port, MAGIC + ticket, data)
    assert "INVALID_ARGUMENT" in out and "plain file name" in out
    assert not _files(store) and not (store.root / "escape.bin").exists()


@pytest.fixture
def sealed_server(tmp_path):
    store = FileStore(tmp_path / "sealed-worker")
    srv = BulkServer(store, "127.0.0.1", sealed=True)
    yield srv, store
    srv.close()


def test_a_sealed_stream_arrives_and_plain_bytes_are_refused(sealed_server, blob):
    srv, store = sealed_server
    path, data, digest = blob
    port, ticket = srv.expect(digest, "model.safetensors", len(data), 0)
    with pytest.raises(BulkRefused, match="not an Orchard bulk stream"):
        send_file("127.0.0.1", port, ticket, path, 0, len(data), sealed=False, timeout_s=30)
    seen = []
    assert send_file("127.0.0.1", port, ticket, path, 0, len(data), sealed=True, timeout_s=30,
                     on_progress=seen.append) == len(data)  # fmt: skip
    assert store.path_of(digest).read_bytes() == data and seen[-1] == len(data)
    port, ticket = srv.expect(digest, "x/" + "y" * 5000, len(data), 0)  # a long refusal
    with pytest.raises(BulkRefused, match="file name 'x/yyy"):
        send_file("127.0.0.1", port, ticket, path, 0, len(data), sealed=True, timeout_s=30)


def test_a_sealed_ticket_is_spent_only_by_who_holds_its_key(sealed_server, blob):
    srv, store = sealed_server
    path, data, digest = blob
    port, ticket = srv.expect(digest, "model.safetensors", len(data), 0)
    with pytest.raises(BulkBroken):  # a ticket never issued: the worker just closes
        send_file("127.0.0.1", port, os.urandom(32), path, 0, len(data), sealed=True,
                  timeout_s=30)  # fmt: skip
    # an eavesdropper saw the ticket's id go by, and names it without the key
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(sealed.MAGIC_SEALED + sealed.ticket_id(ticket))
        sealed.Sealed(s, os.urandom(32), "coordinator").send_line("OBS1")
        assert s.recv(100) == b""  # closed, nothing said, the ticket not spent
    assert not _files(store) and not store.partials.exists()
    assert send_file("127.0.0.1", port, ticket, path, 0, len(data), sealed=True,
                     timeout_s=30) == len(data)  # fmt: skip


def test_a_stand_in_for_the_worker_is_found_out(blob):
    """Something else at the bulk port (a spoofed address) cannot seal GO without the ticket:
    the sender stops and puts the file over gRPC, whose channel is pinned."""
    path, data, digest = blob
    listener = socket.create_server(("127.0.0.1", 0))

    def stand_in() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(100)
            sealed.Sealed(conn, os.urandom(32), "worker").send_line("GO")
            while conn.recv(100):  # until the sender hangs up
                pass

    threading.Thread(target=stand_in, daemon=True).start()
    with listener, pytest.raises(BulkUnavailable, match="not the paired worker"):
        send_file("127.0.0.1", listener.getsockname()[1], os.urandom(32), path, 0, len(data),
                  sealed=True, timeout_s=30)  # fmt: skip


def test_an_altered_record_ends_the_stream_and_the_bytes_before_it_stay(sealed_server, blob):
    srv, store = sealed_server
    path, data, digest = blob
    port, ticket = srv.expect(digest, "model.safetensors", len(data), 0)
    record = sealed.RECORD_BYTES
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(sealed.MAGIC_SEALED + sealed.ticket_id(ticket))
        stream = sealed.Sealed(s, ticket, "coordinator")
        stream.send_line("OBS1")
        assert stream.receive_line(100) == "GO"
        stream.send(data[:record])
        stream.sock = types.SimpleNamespace(  # one bit flipped on the way
            sendall=lambda b: s.sendall(bytes(b[:100]) + bytes([b[100] ^ 1]) + bytes(b[101:])),
            recv_into=s.recv_into,
        )
        stream.send(data[record : 2 * record])
        with pytest.raises((EOFError, ConnectionError)):
            stream.receive_line(100)  # the worker closed without a word
    deadline = time.monotonic() + 10
    while store.held(digest) != record and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.held(digest) == record and not store.has(digest)
    port, ticket = srv.expect(digest, "model.safetensors", len(data), record)
    assert send_file("127.0.0.1", port, ticket, path, record, len(data), sealed=True,
                     timeout_s=30) == len(data)  # fmt: skip
    assert store.path_of(digest).read_bytes() == data


def test_a_stuck_stream_is_taken_over_by_a_newer_one(server, blob):
    srv, store = server
    path, data, digest = blob
    port, ticket = srv.expect(digest, "model.safetensors", len(data), 0)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stuck:
        stuck.sendall(MAGIC + ticket)
        assert stuck.recv(100) == b"GO\n"
        stuck.sendall(data[:500_000])  # and then nothing: a link gone silent
        port, ticket = srv.expect(digest, "model.safetensors", len(data), 0)
        assert send_file("127.0.0.1", port, ticket, path, 0, len(data), sealed=False,
                         timeout_s=30) == len(data)  # fmt: skip
        rest = b""
        while chunk := stuck.recv(4096):  # the worker shut the stuck one down
            rest += chunk
        assert b"OK" not in rest
    assert store.path_of(digest).read_bytes() == data


def test_a_full_disk_is_named_and_the_bytes_written_are_kept(server, blob, monkeypatch):
    import errno
    import types

    from engine.worker import incoming

    srv, store = server
    path, data, digest = blob
    written = []

    def write(fd, view):
        if sum(written) >= 1_000_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(os.write(fd, view))
        return written[-1]

    monkeypatch.setattr(incoming, "os", types.SimpleNamespace(**{**vars(os), "write": write}))
    port, ticket = srv.expect(digest, "model.safetensors", len(data), 0)
    with pytest.raises(BulkRefused) as e:
        send_file("127.0.0.1", port, ticket, path, 0, len(data), sealed=False, timeout_s=30)
    assert e.value.code == "RESOURCE_EXHAUSTED" and "No space left" in e.value.details
    assert store.held(digest) == sum(written) and not store.has(digest)


def _sealed_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sealed-")]


def _sealed_go(s: socket.socket, ticket: bytes) -> sealed.Sealed:
    """A hand-made sealed sender, once the worker said GO."""
    s.sendall(sealed.MAGIC_SEALED + sealed.ticket_id(ticket))
    stream = sealed.Sealed(s, ticket, "coordinator")
    stream.send_line("OBS1")
    assert stream.receive_line(100) == "GO"
    return stream


def test_a_sealed_stream_ends_with_the_checksum_sealed_with_it_even_resumed(sealed_server, blob):
    srv, store = sealed_server
    path, data, digest = blob
    record = sealed.RECORD_BYTES
    port, ticket = srv.expect(digest, "model.safetensors", len(data), 0, caller="c1",
                              checksum_at_end=True)  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        _sealed_go(s, ticket).send(data[:record])  # and the stream breaks
    deadline = time.monotonic() + 10
    while store.held(digest) != record and time.monotonic() < deadline:
        time.sleep(0.01)
    port, ticket = srv.expect(digest, "model.safetensors", len(data), record, caller="c1",
                              checksum_at_end=True)  # fmt: skip
    # the sender hashes the first record again from its file: the checksum is the whole file's
    assert send_file("127.0.0.1", port, ticket, path, record, len(data), sealed=True,
                     timeout_s=30, checksum_at_end=True) == len(data)  # fmt: skip
    assert store.path_of(digest, "c1").read_bytes() == data
    assert store.path_of(digest) is None  # kept on c1's word, as with a checksum before
    assert not _sealed_threads()


def test_a_wrong_or_missing_checksum_at_the_end_publishes_nothing(sealed_server, blob):
    srv, store = sealed_server
    path, data, digest = blob
    record = sealed.RECORD_BYTES
    for trailer, kept in (("xxh3-128:" + "0" * 32, 0), ("thanks", 0), (None, len(data))):
        port, ticket = srv.expect(digest, "model.safetensors", len(data), 0, caller="c1",
                                  checksum_at_end=True)  # fmt: skip
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            stream = _sealed_go(s, ticket)
            for i in range(0, len(data), record):
                stream.send(data[i : i + record])
            if trailer is None:  # the stream ends after the bytes: they stay for a resume
                s.shutdown(socket.SHUT_WR)
                with pytest.raises(EOFError):
                    stream.receive_line(bulk.MAX_REPLY_BYTES)
            else:
                stream.send_line(trailer)
                reply = stream.receive_line(bulk.MAX_REPLY_BYTES)
                assert reply.startswith("ERR INVALID_ARGUMENT"), reply
                assert ("xxh3-128 mismatch" if trailer != "thanks" else "expected its xxh3-128") in reply  # fmt: skip
        assert not _sealed_threads()
        deadline = time.monotonic() + 10
        while store.held(digest) != kept and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.held(digest) == kept and not store.has(digest, "c1")


def test_a_stuck_sealed_stream_is_taken_over_and_its_opener_ends(sealed_server, blob):
    srv, store = sealed_server
    path, data, digest = blob
    port, ticket = srv.expect(digest, "model.safetensors", len(data), 0)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stuck:
        _sealed_go(stuck, ticket).send(data[:1000])  # and then nothing: a link gone silent
        deadline = time.monotonic() + 10
        while store.held(digest) != 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _sealed_threads() == ["sealed-opener"]  # waiting for the next record
        port, ticket = srv.expect(digest, "model.safetensors", len(data), 0)
        assert send_file("127.0.0.1", port, ticket, path, 0, len(data), sealed=True,
                         timeout_s=30) == len(data)  # fmt: skip
        assert stuck.recv(100) == b""  # the worker shut the stuck one down, without a word
    assert store.path_of(digest).read_bytes() == data and not _sealed_threads()
