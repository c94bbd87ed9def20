"""The gRPC side of pairing: a thin servicer over engine.trust's PairingResponder, and the
coordinator's ``pair_with_worker`` that runs the SPAKE2 exchange over a pinned TLS channel."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Sequence

import grpc

from engine.rpc.gen import orchard_pb2, orchard_pb2_grpc
from engine.rpc.tls import fetch_certificate, pinned_channel
from engine.trust.code import normalize_code
from engine.trust.identity import Identity
from engine.trust.pairing import ClientPairing, PairingError
from engine.trust.peer_store import PairedPeer, PeerStore, new_peer
from engine.trust.responder import PairingResponder

log = logging.getLogger(__name__)

_WORKER_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
RETRY_AFTER_HEADER = "x-orchard-retry-after-s"
_STATUS = {
    "wrong_code": grpc.StatusCode.PERMISSION_DENIED,
    "mismatch": grpc.StatusCode.PERMISSION_DENIED,
    "rate_limited": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "fingerprint": grpc.StatusCode.FAILED_PRECONDITION,
}
_KIND = {
    grpc.StatusCode.PERMISSION_DENIED: "wrong_code",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate_limited",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid",
    grpc.StatusCode.FAILED_PRECONDITION: "fingerprint",
}


class PairingServicer(orchard_pb2_grpc.PairingServicer):
    def __init__(self, responder: PairingResponder):
        self.responder = responder

    def PairStart(
        self, request: orchard_pb2.PairStartRequest, context: grpc.ServicerContext
    ) -> orchard_pb2.PairStartReply:
        try:
            session_id, msg_b = self.responder.start(
                request.client_id, request.client_name, request.client_fingerprint,
                request.worker_fingerprint, request.spake_msg,
            )  # fmt: skip
        except PairingError as e:
            _abort(context, e)
        return orchard_pb2.PairStartReply(
            session_id=session_id, worker_id=self.responder.worker_id, spake_msg=msg_b
        )

    def PairFinish(
        self, request: orchard_pb2.PairFinishRequest, context: grpc.ServicerContext
    ) -> orchard_pb2.PairFinishReply:
        try:
            confirm = self.responder.finish(request.session_id, request.client_confirm)
        except PairingError as e:
            _abort(context, e)
        return orchard_pb2.PairFinishReply(worker_confirm=confirm)


def _abort(context: grpc.ServicerContext, e: PairingError) -> None:
    if e.kind == "rate_limited":
        context.set_trailing_metadata(((RETRY_AFTER_HEADER, f"{e.retry_after_s:.1f}"),))
    context.abort(_STATUS.get(e.kind, grpc.StatusCode.INVALID_ARGUMENT), str(e))


def add_pairing_to_server(server: grpc.Server, responder: PairingResponder) -> None:
    orchard_pb2_grpc.add_PairingServicer_to_server(PairingServicer(responder), server)


def pair_with_worker(
    host: str,
    port: int,
    code: str,
    identity: Identity,
    client_id: str,
    store: PeerStore,
    *,
    client_name: str = "",
    expected_fingerprint: str = "",
    timeout_s: float = 10.0,
    interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
) -> PairedPeer:
    """Pair with the worker at host:port using the code it shows; store and return the pin.

    ``expected_fingerprint`` (from its Bonjour advertisement) must match the certificate the
    worker presents. Raises PairingError (``kind`` says why: wrong_code, rate_limited,
    fingerprint, unreachable, ...) or CodeError for a mistyped code, before anything is sent.
    """
    code = normalize_code(code)
    cert_pem, worker_fp = fetch_certificate(host, port, timeout_s)
    if expected_fingerprint and worker_fp != expected_fingerprint:
        raise PairingError(
            "fingerprint",
            f"{host}:{port} presents certificate {worker_fp[:16]}... but advertised {expected_fingerprint[:16]}...: refusing",
        )
    attempt = ClientPairing(code, client_id, identity.fingerprint, worker_fp)
    channel = pinned_channel(f"{host}:{port}", cert_pem)
    try:
        stub = orchard_pb2_grpc.PairingStub(grpc.intercept_channel(channel, *interceptors))
        start = stub.PairStart(
            orchard_pb2.PairStartRequest(
                client_id=client_id,
                client_name=client_name or socket.gethostname(),
                client_fingerprint=identity.fingerprint,
                worker_fingerprint=worker_fp,
                spake_msg=attempt.start(),
            ),  # fmt: skip
            timeout=timeout_s,
        )
        if not _WORKER_ID.match(start.worker_id):
            raise PairingError(
                "invalid", f"{host}:{port}: worker id {start.worker_id[:40]!r} is not a valid id"
            )
        confirm = attempt.confirm(start.worker_id, start.spake_msg)
        finish = stub.PairFinish(
            orchard_pb2.PairFinishRequest(session_id=start.session_id, client_confirm=confirm),
            timeout=timeout_s,
        )
    except grpc.RpcError as e:
        raise _pairing_error(e, host, port) from None
    finally:
        channel.close()
    secret = attempt.finish(finish.worker_confirm)
    old = store.get(start.worker_id)
    if old is not None and old.fingerprint != worker_fp:
        log.warning("worker %s re-paired with a new certificate (reinstalled?)", start.worker_id)
    peer = new_peer(
        start.worker_id, worker_fp, secret, name=f"{host}:{port}", cert_pem=cert_pem.decode("ascii")
    )
    store.put(peer)
    log.info("paired with worker %s at %s:%d", start.worker_id, host, port)
    return peer


def _pairing_error(e: grpc.RpcError, host: str, port: int) -> PairingError:
    code = e.code()  # type: ignore[attr-defined]
    detail = e.details() or code.name  # type: ignore[attr-defined]
    retry = 0.0
    for key, value in e.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == RETRY_AFTER_HEADER:
            retry = float(value)
    return PairingError(_KIND.get(code, "unreachable"), f"{host}:{port}: {detail}", retry)
