"""Pairing with a worker: the code dialog's work, done on a pool thread by the engine."""

from __future__ import annotations

from engine.rpc.pairing_service import pair_with_worker
from engine.trust import PairedPeer, open_trust_home


def pair(address: str, code: str, fingerprint: str = "") -> PairedPeer:
    """SPAKE2 pairing with the worker at host:port; the pin lands in this machine's trust folder."""
    host, _, port = address.rpartition(":")
    home = open_trust_home()
    return pair_with_worker(
        host,
        int(port),
        code,
        home.identity,
        home.machine_id,
        home.workers(),
        expected_fingerprint=fingerprint,
    )
