"""TLS for remote workers: the server shows its own certificate, the client pins it.

How the pin works (grpc-python cannot hand back the peer certificate of a channel): the client
fetches the worker's certificate with a plain TLS handshake, checks its SHA-256 fingerprint
against the pinned one (or, before pairing, takes it on trust for the SPAKE2 exchange, which
binds it), then opens the gRPC channel with that certificate as the ONLY root and the target
name overridden to ``CERT_NAME``. The gRPC handshake succeeds only if the server proves it
holds that certificate's key, so a different server behind the same address fails in TLS, and
addresses or host names never need to match a certificate.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from typing import Any

import grpc

from engine.trust.identity import CERT_NAME, Identity, fingerprint_of_der

DEFAULT_TIMEOUT_S = 5.0


class PeerCertificateError(ConnectionError):
    """The worker's certificate could not be fetched (address and reason in the message)."""


def server_credentials(identity: Identity) -> grpc.ServerCredentials:
    """Serve with this machine's own key and self-signed certificate (clients pin it)."""
    return grpc.ssl_server_credentials([(identity.key_pem, identity.cert_pem)])


def fetch_certificate(
    host: str, port: int, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[bytes, str]:
    """(PEM certificate, fingerprint) that ``host:port`` presents; not verified here, on purpose."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we pin the fingerprint ourselves; there is no CA
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            with ctx.wrap_socket(raw, server_hostname=CERT_NAME) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as e:
        raise PeerCertificateError(
            f"{host}:{port}: could not fetch its TLS certificate ({e})"
        ) from None
    if not der:
        raise PeerCertificateError(f"{host}:{port}: presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii"), fingerprint_of_der(der)


def pinned_channel(
    address: str,
    cert_pem: bytes,
    call_credentials: grpc.CallCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel that only talks to the holder of ``cert_pem``'s key."""
    creds = grpc.ssl_channel_credentials(root_certificates=cert_pem)
    if call_credentials is not None:
        creds = grpc.composite_channel_credentials(creds, call_credentials)
    return grpc.secure_channel(
        address, creds, options=[*options, ("grpc.ssl_target_name_override", CERT_NAME)]
    )
