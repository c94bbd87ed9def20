"""The wire against a REAL worker process on 127.0.0.1: malformed bytes, oversized messages,
calls out of order, bad credentials, paths in file names. Each call gets a status with a clear
message and the worker keeps serving. Covered elsewhere, not repeated here: the Collective
wrong group token (tests/dist/test_wire_security.py::test_wrong_group_token_is_refused), the
Collective message limit (::test_server_enforces_its_message_limit), Step/Evaluate/GetState
before SetupJob and '../' in PutFile (tests/worker/test_worker_service.py)."""

from __future__ import annotations

import hashlib
import socket

import grpc
import pytest

from engine.discovery import PROTOCOL_VERSION as ADVERTISED_PROTOCOL
from engine.rpc.auth import TOKEN_HEADER, new_token
from engine.rpc.gen import orchard_pb2 as pb
from engine.rpc.server import MAX_MESSAGE_BYTES
from engine.runtime.local_workers import start_local_worker, stop_local_workers
from engine.worker.info import PROTOCOL_VERSION
from tests.reliability.wire import RawCaller, methods

pytestmark = pytest.mark.timeout(120)
GARBAGE = [b"\xff\xff\xff\xff\x0f", b"\x0a\x99", b"\x12\x05abc", b"\x08" + b"\xff" * 11]
OK, BAD = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wire")
    token = new_token()
    w = start_local_worker(token, tmp / "data", tmp / "worker.log", timeout_s=60)
    caller = RawCaller(w.address, token)
    try:
        yield w, caller, tmp
    finally:
        caller.close()
        stop_local_workers([w], grace_s=5)


def _still_serving(w, caller) -> None:
    assert w.proc.poll() is None, f"worker exited with {w.proc.returncode}"
    assert caller.serving()


def test_describe_reports_the_protocol_discovery_advertises(worker):
    w, caller, _ = worker
    info = pb.WorkerInfo.FromString(caller.call("/orchard.v1.Worker/Describe", b"").reply)
    assert info.protocol_version == PROTOCOL_VERSION == ADVERTISED_PROTOCOL


@pytest.mark.parametrize("service", ["Worker", "Collective"])
def test_malformed_protobuf_gets_a_status_and_the_worker_serves(worker, service):
    w, caller, _ = worker
    for method, s_in, s_out in methods(service):
        for blob in GARBAGE:
            out = caller.call(method, blob, s_in, s_out)
            assert out.code in (grpc.StatusCode.INTERNAL, BAD), (method, blob, out)
            assert out.details, (method, blob)
    _still_serving(w, caller)


def test_a_message_over_the_limit_is_refused(worker):
    w, caller, _ = worker
    huge = b"a" * (MAX_MESSAGE_BYTES + 1024)
    has = pb.HasFileRequest(sha256=huge.decode()).SerializeToString()
    put = pb.FileChunk(sha256="0" * 64, name="big", offset=0, data=huge, last=True)
    for method, req, s_in in (
        ("/orchard.v1.Worker/HasFile", has, False),
        ("/orchard.v1.Worker/PutFile", put.SerializeToString(), True),
    ):
        out = caller.call(method, req, s_in)
        assert out.code == grpc.StatusCode.RESOURCE_EXHAUSTED, (method, out)
        assert "larger than max" in out.details or "exceeds" in out.details.lower(), out
    _still_serving(w, caller)


@pytest.mark.parametrize(
    "metadata, needle",
    [((), "missing"), (((TOKEN_HEADER, "wrong"),), "wrong token"),
     ((("authorization", "Bearer x"),), "missing"), (((TOKEN_HEADER, ""),), "wrong token")],
)  # fmt: skip
def test_every_worker_call_needs_the_token(worker, metadata, needle):
    w, caller, _ = worker
    for method, s_in, s_out in methods("Worker"):
        out = caller.call(method, b"", s_in, s_out, metadata=metadata)
        assert out.code == grpc.StatusCode.UNAUTHENTICATED, (method, out)
        assert method in out.details and needle in out.details, out
    _still_serving(w, caller)


def test_calls_out_of_order_say_what_comes_first(worker):
    w, caller, _ = worker
    state = pb.StateChunk(name="__meta__", meta_json=b'{"step": 1}', last=True)
    put_state = caller.call("/orchard.v1.Worker/PutState", state.SerializeToString(), True)
    assert put_state.code == grpc.StatusCode.FAILED_PRECONDITION, put_state
    assert "call SetupJob first" in put_state.details
    for call, req in (
        ("Step", pb.StepRequest(step=3, learning_rate=1e-3)),
        ("Evaluate", pb.EvaluateRequest(step=3, max_batches=1)),
    ):
        out = caller.call(f"/orchard.v1.Worker/{call}", req.SerializeToString())
        assert out.code == grpc.StatusCode.FAILED_PRECONDITION and "SetupJob" in out.details, out
    # nonsense arguments are named before the order is even looked at
    nonsense = pb.StepRequest(step=-5, learning_rate=float("nan")).SerializeToString()
    out = caller.call("/orchard.v1.Worker/Step", nonsense)
    assert out.code == BAD and "-5" in out.details and "nan" in out.details, out
    _still_serving(w, caller)


@pytest.mark.parametrize(
    "fields, needle",
    [
        (dict(job_toml="[[[", world_size=1), "not valid TOML"),
        (dict(job_toml="[lora]\nrank = -3\n", world_size=1), "lora.rank"),
        (dict(world_size=-5), "rank 0"),
        (dict(rank=3, world_size=2, peers=["a", "b"], group_token="t"), "rank 3"),
        (dict(world_size=2, peers=["a"], group_token="t"), "peers"),
        (dict(world_size=2, peers=["a", "b"]), "group_token"),
        (dict(world_size=1, run_id="../../etc"), "plain file name"),
        (dict(world_size=1, files={"dataset": "0" * 64}), "never sent"),
        (dict(world_size=1, files={"dataset": "not-a-hash"}), "64 lowercase hex"),
    ],
)
def test_bad_setup_requests_are_invalid_argument_naming_the_field(worker, fields, needle):
    w, caller, _ = worker
    req = pb.SetupJobRequest(**fields, protocol_version=PROTOCOL_VERSION).SerializeToString()
    out = caller.call("/orchard.v1.Worker/SetupJob", req)
    assert out.code == BAD and needle in out.details, out
    _still_serving(w, caller)


def test_another_protocol_version_is_refused_naming_both(worker):
    w, caller, _ = worker
    ours = f"this worker speaks {PROTOCOL_VERSION!r}: update Orchard on one of them"
    setup = dict(job_toml="", world_size=1, run_id="r")  # valid apart from the version
    for version, theirs in (
        ("0", "'0'"),
        ("", "none"),
        (PROTOCOL_VERSION + "9", repr(PROTOCOL_VERSION + "9")),
    ):
        for call, req in (
            ("SetupJob", pb.SetupJobRequest(**setup, protocol_version=version)),
            ("Probe", pb.ProbeRequest(payload=b"x", protocol_version=version)),
        ):
            out = caller.call(f"/orchard.v1.Worker/{call}", req.SerializeToString())
            assert out.code == grpc.StatusCode.FAILED_PRECONDITION, (call, version, out)
            assert f"{call}: coordinator speaks orchard protocol {theirs}" in out.details, out
            assert ours in out.details, out
    _still_serving(w, caller)
    ok = caller.call(
        "/orchard.v1.Worker/Probe",
        pb.ProbeRequest(payload=b"abc", protocol_version=PROTOCOL_VERSION).SerializeToString(),
    )
    assert ok.code == OK and pb.ProbeReply.FromString(ok.reply).received_bytes == 3, ok


def _chunk(name: str, sha: str, data: bytes = b"x", offset: int = 0, last: bool = True) -> bytes:
    return pb.FileChunk(
        sha256=sha, name=name, offset=offset, data=data, last=last
    ).SerializeToString()


def test_put_file_refuses_paths_bad_hashes_and_broken_streams(worker):
    w, caller, tmp = worker
    data = b"orchard\n"
    sha = hashlib.sha256(data).hexdigest()
    put = "/orchard.v1.Worker/PutFile"
    for name in ("../x", "/etc/passwd", "/tmp/x", "a/b", "..", ".", "", "x\0y", "..\\x"):
        out = caller.call(put, _chunk(name, sha, data), True)
        assert out.code == BAD and "plain file name" in out.details, (name, out)
    streams = {
        "sha256 mismatch": [_chunk("f", "0" * 64, data)],
        "64 lowercase hex": [_chunk("f", sha.upper(), data)],
        "expected 0": [_chunk("f", sha, data, offset=5)],
        "same sha256 and name": [
            _chunk("f", sha, data[:3], last=False),
            _chunk("g", sha, data[3:], 3),
        ],
        "held no chunks": [],
    }
    for needle, chunks in streams.items():
        out = caller.call(put, chunks, True)
        assert out.code == BAD and needle in out.details, (needle, out)
    store = tmp / "data" / "files"
    assert not [p for p in store.rglob("*") if p.is_file()], "a refused upload left a file"
    assert not (tmp / "x").exists() and not (tmp / "data" / "x").exists()
    assert caller.call(put, _chunk("ok.jsonl", sha, data), True).code == OK
    assert (store / sha / "ok.jsonl").read_bytes() == data
    _still_serving(w, caller)


def test_open_file_and_the_bulk_socket_refuse_paths_sizes_and_bad_tickets(worker):
    w, caller, tmp = worker
    stored = sorted((tmp / "data" / "files").rglob("*"))
    sha = hashlib.sha256(b"bulk").hexdigest()
    open_file = "/orchard.v1.Worker/OpenFile"
    cases = {
        "plain file name": pb.OpenFileRequest(sha256=sha, name="../x", size=4),
        "64 lowercase hex": pb.OpenFileRequest(sha256="x" * 64, name="f", size=4),
        "expected 0 to": pb.OpenFileRequest(sha256=sha, name="f", size=-1),
    }
    for needle, req in cases.items():
        out = caller.call(open_file, req.SerializeToString())
        assert out.code == BAD and needle in out.details, (needle, out)
    out = caller.call(
        open_file, pb.OpenFileRequest(sha256=sha, name="f", size=4).SerializeToString()
    )
    reply = pb.OpenFileReply.FromString(out.reply)
    assert out.code == OK and reply.bulk_port and len(reply.ticket) == 32 and not reply.bulk_tls
    assert not reply.bulk_sealed  # a local worker's: plain TCP
    host = w.address.rpartition(":")[0]
    for hello in (b"OBK1" + bytes(32), b"OBK1" + reply.ticket[::-1], b"nonsense" * 8):
        with socket.create_connection((host, reply.bulk_port), timeout=10) as s:
            s.sendall(hello)
            line = s.recv(4096).decode()
        assert line.startswith("ERR ") and "GO" not in line, line
    assert sorted((tmp / "data" / "files").rglob("*")) == stored
    _still_serving(w, caller)


def test_collective_chunk_before_any_job_is_refused(worker):
    w, caller, _ = worker
    chunk = pb.CollectiveChunk(group_token="guess", op_id=1, src=0, total=4, data=b"\0" * 16,
                               dtype="float32").SerializeToString()  # fmt: skip
    for method, s_in in (
        ("/orchard.v1.Collective/Send", False),
        ("/orchard.v1.Collective/Push", True),
    ):
        out = caller.call(method, chunk, s_in)
        assert out.code == grpc.StatusCode.FAILED_PRECONDITION and "no group" in out.details, out
    _still_serving(w, caller)
