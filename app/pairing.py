"""Pairing with a worker: the code dialog's work, done on a pool thread by the engine."""

from __future__ import annotations

from engine.rpc.paired_client import split_address
from engine.rpc.pairing_service import pair_with_worker
from engine.rpc.tls import PeerCertificateError
from engine.trust import PairedPeer, PairingError, open_trust_home

HINTS = {  # what to do next, by PairingError.kind (the same advice as `orchard pair`)
    "wrong_code": "check the code on the worker's screen and try again",
    "rate_limited": "too many wrong codes; wait a little before trying again",
    "fingerprint": "the machine answering is not the one advertised; not paired",
}


def pair(address: str, code: str, fingerprint: str = "") -> PairedPeer:
    """SPAKE2 pairing with the worker at host:port; the pin lands in this machine's trust folder.

    Raises ValueError/PairingError/ConnectionError whose message names the problem."""
    host, port = split_address(address)
    home = open_trust_home()
    try:
        return pair_with_worker(
            host, port, code, home.identity, home.machine_id, home.workers(),
            expected_fingerprint=fingerprint,
        )  # fmt: skip
    except PeerCertificateError as e:
        raise ConnectionError(f"cannot reach the worker at {address}: {e}") from None
    except PairingError as e:
        hint = HINTS.get(e.kind)
        raise PairingError(e.kind, f"{e} ({hint})" if hint else str(e), e.retry_after_s) from None
