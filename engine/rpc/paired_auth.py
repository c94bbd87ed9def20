"""Authenticated calls to a remote worker after pairing.

Every call carries ``x-orchard-client`` (the coordinator's id), ``x-orchard-time`` and
``x-orchard-auth`` = HMAC(pairing secret, client, method, time) (engine/trust/tokens.py).
The worker's interceptor refuses anything else with UNAUTHENTICATED, except the Pairing
service (that is how a secret is made), health probes, and the peer-to-peer Collective calls
(those check the run's group token themselves, see engine/rpc/auth.py). This sits beside
auth.TokenInterceptor, which guards local workers with a per-run token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from engine.rpc.auth import OPEN_METHOD_PREFIXES, CheckingInterceptor
from engine.rpc.tls import fetch_certificate, pinned_channel
from engine.trust.peer_store import PairedPeer, PeerStore, check_pin
from engine.trust.tokens import call_token, check_call_token

log = logging.getLogger(__name__)

CLIENT_HEADER = "x-orchard-client"
TIME_HEADER = "x-orchard-time"
AUTH_HEADER = "x-orchard-auth"
PAIRING_PREFIX = "/orchard.v1.Pairing/"
PAIRED_OPEN_PREFIXES: tuple[str, ...] = (PAIRING_PREFIX, *OPEN_METHOD_PREFIXES)


class PairedAuthInterceptor(CheckingInterceptor):
    """UNAUTHENTICATED unless the call proves it holds a paired client's secret."""

    def __init__(self, clients: PeerStore, open_prefixes: Sequence[str] = PAIRED_OPEN_PREFIXES):
        super().__init__(open_prefixes)
        self.clients = clients

    def _problem(self, method: str, meta: dict[str, Any]) -> str:
        client, stamp, token = (meta.get(h) for h in (CLIENT_HEADER, TIME_HEADER, AUTH_HEADER))
        if not (isinstance(client, str) and isinstance(stamp, str) and isinstance(token, str)):
            return f"not paired: missing {CLIENT_HEADER}/{TIME_HEADER}/{AUTH_HEADER} metadata (pair with the worker's code first)"
        peer = self.clients.get(client)
        if peer is None:
            return f"client {client[:64]!r} is not paired with this worker"
        reason = check_call_token(peer.secret, client, method, stamp, token)
        return f"bad credentials: {reason}" if reason else ""


class PairedCallCredentials(grpc.AuthMetadataPlugin):
    """Client side: sign every call with the secret from the pairing."""

    def __init__(self, client_id: str, secret: bytes, clock: Callable[[], float] = time.time):
        self.client_id, self._secret, self._clock = client_id, secret, clock

    def __call__(
        self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback
    ) -> None:
        # service_url ends in the service ("https://host:port/orchard.v1.Worker"); the server
        # sees the method as "/orchard.v1.Worker/Describe".
        method = f"/{context.service_url.rsplit('/', 1)[-1]}/{context.method_name}"
        stamp = int(self._clock())
        token = call_token(self._secret, self.client_id, method, stamp)
        callback(
            ((CLIENT_HEADER, self.client_id), (TIME_HEADER, str(stamp)), (AUTH_HEADER, token)), None
        )


def open_paired_channel(
    host: str,
    port: int,
    worker: PairedPeer,
    client_id: str,
    options: Sequence[tuple[str, Any]] = (),
    timeout_s: float = 5.0,
) -> grpc.Channel:
    """A pinned, signed channel to a paired worker; SpoofedPeerError when another certificate answers."""
    _, fingerprint = fetch_certificate(host, port, timeout_s)
    check_pin(worker, fingerprint)  # a clear error before TLS would fail on the pinned root anyway
    creds = grpc.metadata_call_credentials(
        PairedCallCredentials(client_id, worker.secret), name="orchard-paired"
    )
    return pinned_channel(f"{host}:{port}", worker.cert_pem.encode("ascii"), creds, options)
