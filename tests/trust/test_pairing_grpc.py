"""Pairing end to end over real TLS gRPC on 127.0.0.1, then authenticated calls."""

from __future__ import annotations

import time

import grpc
import pytest

from engine.rpc.gen import orchard_pb2, orchard_pb2_grpc
from engine.rpc.paired_auth import (
    AUTH_HEADER,
    CLIENT_HEADER,
    TIME_HEADER,
    PairedCallCredentials,
    open_paired_channel,
)
from engine.rpc.pairing_service import pair_with_worker
from engine.rpc.tls import fetch_certificate, pinned_channel
from engine.trust import (
    CodeError,
    PairingError,
    SpoofedPeerError,
    WrongCodeLimiter,
    call_token,
    display_code,
    open_trust_home,
)
from tests.trust.grpc_servers import serve_relay, serve_worker


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder(grpc.UnaryUnaryClientInterceptor):
    """Keeps the serialized bytes of every request the client sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        self.sent.append((client_call_details.method, request.SerializeToString()))
        return continuation(client_call_details, request)


@pytest.fixture
def worker(tmp_path):
    clock = Clock()
    home = open_trust_home(tmp_path / "worker")
    responder = home.responder(
        WrongCodeLimiter(max_failures=3, base_delay_s=1.0, lockout_s=60, clock=clock)
    )
    server, port = serve_worker(responder)
    yield home, responder, port, clock
    server.stop(0)


@pytest.fixture
def coordinator(tmp_path):
    return open_trust_home(tmp_path / "coordinator")


def _pair(coord, port: int, code: str, **kw):  # type: ignore[no-untyped-def]
    return pair_with_worker(
        "127.0.0.1",
        port,
        code,
        coord.identity,
        coord.machine_id,
        coord.workers(),
        timeout_s=5,
        **kw,
    )


def _describe(channel: grpc.Channel) -> orchard_pb2.WorkerInfo:
    with channel:
        return orchard_pb2_grpc.WorkerStub(channel).Describe(
            orchard_pb2.DescribeRequest(), timeout=5
        )


def test_pairing_end_to_end_then_signed_calls_work(worker, coordinator):
    home, responder, port, _ = worker
    code = responder.codes.current()
    recorder = Recorder()
    peer = _pair(coordinator, port, display_code(code).lower(), interceptors=[recorder])

    assert peer.peer_id == home.machine_id and peer.fingerprint == home.identity.fingerprint
    client_side = home.clients().get(coordinator.machine_id)
    assert (
        client_side.secret == peer.secret
        and client_side.fingerprint == coordinator.identity.fingerprint
    )
    assert coordinator.workers().get(home.machine_id) == peer  # pinned and stored

    # What crossed the wire: two pairing messages, neither holding the code in any form.
    assert [m for m, _ in recorder.sent] == [
        "/orchard.v1.Pairing/PairStart",
        "/orchard.v1.Pairing/PairFinish",
    ]
    for _, raw in recorder.sent:
        for form in (code, display_code(code), code.lower(), code.encode().hex()):
            assert form.encode() not in raw

    channel = open_paired_channel("127.0.0.1", port, peer, coordinator.machine_id)
    assert _describe(channel).worker_id == home.machine_id


def test_wrong_codes_in_a_row_are_rate_limited_then_locked_with_a_new_code(worker, coordinator):
    _, responder, port, clock = worker
    old = responder.codes.current()
    wrong = "00000000" if old != "00000000" else "11111111"
    kinds = []
    for _ in range(3):
        with pytest.raises(PairingError) as e:
            _pair(coordinator, port, wrong)
        kinds.append(e.value.kind)
        with pytest.raises(PairingError) as e:
            _pair(coordinator, port, old)  # straight away: backing off, not even tried
        kinds.append((e.value.kind, e.value.retry_after_s > 0))
        clock.now += 5
    assert kinds[:2] == ["wrong_code", ("rate_limited", True)]
    assert kinds[-1] == ("rate_limited", True)  # locked out after the third wrong code
    assert responder.codes.current() != old
    clock.now += 60
    peer = _pair(coordinator, port, responder.codes.current())
    assert peer.peer_id == responder.worker_id


def test_mistyped_code_is_refused_before_anything_is_sent(worker, coordinator):
    recorder = Recorder()
    with pytest.raises(CodeError, match="expected 8 characters"):
        _pair(coordinator, worker[2], "12345", interceptors=[recorder])
    assert recorder.sent == []


def test_calls_without_a_valid_token_are_unauthenticated(worker, coordinator):
    home, responder, port, _ = worker
    peer = _pair(coordinator, port, responder.codes.current())
    cert = peer.cert_pem.encode()
    me = coordinator.machine_id

    def creds(client_id: str, secret: bytes, skew: float = 0.0) -> grpc.CallCredentials:
        plugin = PairedCallCredentials(client_id, secret, clock=lambda: time.time() + skew)
        return grpc.metadata_call_credentials(plugin)

    bad = {
        "no token": pinned_channel(f"127.0.0.1:{port}", cert),
        "wrong secret": pinned_channel(f"127.0.0.1:{port}", cert, creds(me, b"x" * 32)),
        "unknown client": pinned_channel(f"127.0.0.1:{port}", cert, creds("stranger", peer.secret)),
        "stale clock": pinned_channel(
            f"127.0.0.1:{port}", cert, creds(me, peer.secret, skew=-3600)
        ),
    }
    for why, channel in bad.items():
        with pytest.raises(grpc.RpcError) as e:
            _describe(channel)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, why

    # A token made for another method is not accepted for this one.
    stamp = int(time.time())
    replay = (
        (CLIENT_HEADER, me),
        (TIME_HEADER, str(stamp)),
        (AUTH_HEADER, call_token(peer.secret, me, "/orchard.v1.Worker/Stop", stamp)),
    )
    with pinned_channel(f"127.0.0.1:{port}", cert) as channel, pytest.raises(grpc.RpcError) as e:
        orchard_pb2_grpc.WorkerStub(channel).Describe(
            orchard_pb2.DescribeRequest(), metadata=replay, timeout=5
        )
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED

    good = pinned_channel(f"127.0.0.1:{port}", cert, creds(me, peer.secret))
    assert _describe(good).worker_id == home.machine_id


def test_a_spoofed_worker_with_another_certificate_is_refused(worker, coordinator, tmp_path):
    home, responder, port, _ = worker
    peer = _pair(coordinator, port, responder.codes.current())
    # An impostor claims the same worker id, with its own certificate.
    impostor_home = open_trust_home(tmp_path / "impostor")
    impostor = impostor_home.responder()
    impostor.worker_id = home.machine_id
    server, spoof_port = serve_worker(impostor)
    try:
        assert (
            coordinator.workers().verdict(home.machine_id, impostor_home.identity.fingerprint)
            == "spoofed"
        )
        with pytest.raises(SpoofedPeerError, match=home.machine_id):
            open_paired_channel("127.0.0.1", spoof_port, peer, coordinator.machine_id)
        # Even skipping that check, TLS pinned to the real certificate will not talk to it.
        with pytest.raises(grpc.RpcError) as e:
            _describe(pinned_channel(f"127.0.0.1:{spoof_port}", peer.cert_pem.encode()))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        # Pairing refuses when the advertised fingerprint is not what the address presents.
        with pytest.raises(PairingError) as pe:
            _pair(
                coordinator,
                spoof_port,
                impostor.codes.current(),
                expected_fingerprint=peer.fingerprint,
            )
        assert pe.value.kind == "fingerprint"
    finally:
        server.stop(0)


def test_a_relay_in_the_middle_cannot_pair_even_with_the_right_code(worker, coordinator, tmp_path):
    home, responder, port, _ = worker
    cert_pem, real_fp = fetch_certificate("127.0.0.1", port)
    relay_identity = open_trust_home(tmp_path / "relay").identity
    server, relay_port = serve_relay(relay_identity, f"127.0.0.1:{port}", cert_pem, real_fp)
    try:
        with pytest.raises(PairingError) as e:
            _pair(coordinator, relay_port, responder.codes.current())
        assert e.value.kind == "wrong_code"
        assert home.clients().get(coordinator.machine_id) is None
        assert coordinator.workers().get(home.machine_id) is None
    finally:
        server.stop(0)
