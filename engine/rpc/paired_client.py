"""The coordinator's way to a remote worker: pinned TLS + signed calls, or a clear refusal.

A worker is found in this machine's ``workers.json`` by the certificate it presents (so a
worker that moved to another address still works); a certificate nobody pinned is refused
with "not paired: run orchard pair HOST", and a different certificate at an address where a
paired worker lived is refused as a spoof.
"""

from __future__ import annotations

import logging

from engine.rpc.paired_auth import open_paired_channel
from engine.rpc.server import CHANNEL_OPTIONS
from engine.rpc.tls import fetch_certificate
from engine.rpc.worker_client import WorkerClient
from engine.trust.home import TrustHome
from engine.trust.peer_store import PairedPeer, SpoofedPeerError

log = logging.getLogger(__name__)


class NotPairedError(PermissionError):
    """The worker at an address has never been paired with this machine."""

    def __init__(self, address: str):
        self.address = address
        super().__init__(
            f"worker {address} is not paired: run `orchard pair {address}` and enter the code "
            "it shows on its screen"
        )


def split_address(address: str, default_port: int = 50051) -> tuple[str, int]:
    """'host', 'host:port' or '[v6]:port' -> (host, port); ValueError names the bad part."""
    host, sep, port = address.rpartition(":")
    if not sep or host.endswith(":") or (host.count(":") and not host.startswith("[")):
        host, port = address, ""  # no port, or a bare IPv6 address
    host = host.strip("[]")
    if not host:
        raise ValueError(f"{address!r}: expected HOST or HOST:PORT")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r}: port {port!r} is not a number from 1 to 65535")
    return host, int(port)


def find_pinned(home: TrustHome, address: str, fingerprint: str) -> PairedPeer:
    """The paired worker whose pinned certificate is ``fingerprint``, else why not."""
    store = home.workers()
    peers = store.all()
    for peer in peers:
        if peer.fingerprint == fingerprint:
            return peer
    where = split_address(address)
    for peer in peers:
        if _same_place(peer.name, where):  # paired here before, now another certificate answers
            raise SpoofedPeerError(peer.peer_id, peer.fingerprint, fingerprint)
    raise NotPairedError(address)


def _same_place(name: str, where: tuple[str, int]) -> bool:
    try:
        return split_address(name) == where
    except ValueError:
        return False


def connect_paired(
    address: str, home: TrustHome, timeout_s: float = 30.0
) -> tuple[WorkerClient, PairedPeer]:
    """A WorkerClient over a pinned, signed channel to the paired worker at ``address``.

    Raises NotPairedError, SpoofedPeerError or PeerCertificateError (unreachable)."""
    host, port = split_address(address)
    _, fingerprint = fetch_certificate(host, port, timeout_s=min(timeout_s, 10.0))
    peer = find_pinned(home, address, fingerprint)
    channel = open_paired_channel(
        host, port, peer, home.machine_id, options=CHANNEL_OPTIONS, timeout_s=min(timeout_s, 10.0)
    )
    log.info("connected to paired worker %s at %s over pinned TLS", peer.peer_id, address)
    client = WorkerClient(address, "", timeout_s=timeout_s, channel=channel, pin=peer.fingerprint)
    return client, peer
