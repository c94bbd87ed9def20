"""put_file against a real worker process: large files over the bulk socket, resumes after a
broken stream (bulk or gRPC), refusals, and the pinned TLS socket of a paired worker."""

import hashlib
import os
import time

import grpc
import pytest

from engine.rpc import bulk, worker_client
from engine.rpc.gen import orchard_pb2 as pb
from engine.rpc.worker_client import WorkerCallError, WorkerClient
from engine.worker.checksum import file_checksum as checksum_of

MIB = 1024 * 1024


class Cut(Exception):
    """The coordinator dies mid-file (raised from its progress callback)."""


@pytest.fixture
def sends(monkeypatch):
    """Every bulk send_file call: (offset, sealed, outcome)."""
    calls = []
    real = worker_client.send_file

    def spy(host, port, ticket, path, offset, size, *, sealed, **kw):
        try:
            out = real(host, port, ticket, path, offset, size, sealed=sealed, **kw)
        except BaseException as e:
            calls.append((offset, sealed, e))
            raise
        calls.append((offset, sealed, out))
        return out

    monkeypatch.setattr(worker_client, "send_file", spy)
    return calls


def _blob(tmp_path, name="model.safetensors", mib=6):
    data = os.urandom(mib * MIB + 777)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data, hashlib.sha256(data).hexdigest()


def _held(c: WorkerClient, digest: str, size: int, want: int) -> int:
    """What OpenFile reports held, once it is ``want`` (the worker notices a cut at once)."""
    deadline = time.monotonic() + 10
    while True:
        req = pb.OpenFileRequest(sha256=digest, name="x", size=size)
        held = c._stub.OpenFile(req, metadata=c._metadata(), timeout=10).offset
        if held == want or time.monotonic() > deadline:
            return held
        time.sleep(0.02)


def _cut_after(first_mib: int):
    def progress(sent: int) -> None:
        if sent >= first_mib * MIB:
            raise Cut

    return progress


def test_a_large_file_goes_over_the_bulk_socket_once(local_worker, tmp_path, sends):
    worker, token = local_worker
    path, data, digest = _blob(tmp_path)
    seen = []
    with WorkerClient(worker.address, token, timeout_s=30) as c:
        assert c.put_file(path, digest, on_progress=seen.append) == len(data)
        assert c.has_file(digest) and seen[-1] == len(data)
        assert sends == [(0, False, len(data))]  # plain TCP beside a token channel
        assert c.put_file(path, digest) == len(data)  # held: nothing is sent
        assert len(sends) == 1
        with pytest.raises(WorkerCallError) as e:
            c.put_file(path, "0" * 64)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "sha256 mismatch" in e.value.details
        with pytest.raises(WorkerCallError) as e:
            c.put_file(path, digest, name="../escape.bin")
        assert "plain file name" in e.value.details
    assert not list((tmp_path / "data").rglob("escape.bin"))


def test_a_broken_stream_resumes_where_it_stopped(local_worker, tmp_path, sends, monkeypatch):
    worker, token = local_worker
    monkeypatch.setattr(bulk, "SEGMENT_BYTES", MIB)
    path, data, digest = _blob(tmp_path)
    with WorkerClient(worker.address, token, timeout_s=30) as c:
        with pytest.raises(Cut):
            c.put_file(path, digest, on_progress=_cut_after(2))
        assert _held(c, digest, len(data), 2 * MIB) == 2 * MIB
        assert c.put_file(path, digest) == len(data)
        assert sends[-1] == (2 * MIB, False, len(data))  # the bulk socket took it from there
        # the gRPC stream resumes too (a worker whose bulk socket cannot be reached)
        path2, data2, digest2 = _blob(tmp_path, "other.bin")
        with pytest.raises(Cut):
            c.put_file(path2, digest2, on_progress=_cut_after(3))
        assert _held(c, digest2, len(data2), 3 * MIB) == 3 * MIB
        c.use_bulk = False
        seen = []
        assert c.put_file(path2, digest2, on_progress=seen.append) == len(data2)
        assert seen[0] == 3 * MIB + worker_client.CHUNK_BYTES  # its first chunk was at 3 MiB
        assert c.has_file(digest) and c.has_file(digest2)


@pytest.mark.slow
def test_a_paired_worker_gets_files_over_a_sealed_stream(paired, tmp_path, sends):
    _, client = paired("agent", "--no-warm-spare")
    path, data, digest = _blob(tmp_path)
    assert client.put_file(path, digest) == len(data)
    ((offset, sealed, out),) = sends
    assert offset == 0 and out == len(data) and sealed is True
    assert client.has_file(digest)
    # a Hugging Face blob's checksum, given as a function: the sealed stream carries it at its
    # end, computed as it seals the bytes; the function is never called
    asked, at_end = [], []
    real = client._open_file
    client._open_file = lambda *a, **kw: (r := real(*a, **kw), at_end.append(r.checksum_at_end))[0]  # fmt: skip
    path, data, digest = _blob(tmp_path, "blob.safetensors")
    assert client.put_file(path, digest, checksum=lambda: asked.append(1) or "") == len(data)
    assert client.has_file(digest) and asked == [] and at_end == [True]
    # an older worker ignores checksum_at_end (says false): it gets the checksum first
    client._open_file = lambda *a, **kw: real(*a[:4])
    path, data, digest = _blob(tmp_path, "old.safetensors")
    assert client.put_file(path, digest, checksum=lambda: asked.append(1) or checksum_of(path)) == len(data)  # fmt: skip
    assert client.has_file(digest) and asked == [1]
