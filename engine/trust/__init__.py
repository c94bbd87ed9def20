"""Trust between machines: TLS identities, pairing codes, SPAKE2 pairing, paired peers.

grpc-free: engine.rpc carries the bytes (engine/rpc/pairing_service.py, tls.py, paired_auth.py).
"""

from engine.trust.code import CodeError, CodeStore, display_code, new_code, normalize_code
from engine.trust.files import default_data_dir
from engine.trust.home import TrustHome, open_trust_home
from engine.trust.identity import (
    CERT_NAME,
    Identity,
    IdentityError,
    fingerprint_of_pem,
    load_or_create_identity,
    load_or_create_machine_id,
)
from engine.trust.pairing import ClientPairing, PairingError, WorkerPairing
from engine.trust.peer_store import (
    CLIENTS_FILE,
    WORKERS_FILE,
    PairedPeer,
    PeerStore,
    PeerStoreError,
    SpoofedPeerError,
    check_pin,
    new_peer,
)
from engine.trust.ratelimit import RateLimited, WrongCodeLimiter
from engine.trust.responder import PairingResponder
from engine.trust.tokens import call_token, check_call_token

__all__ = [
    "CERT_NAME",
    "CLIENTS_FILE",
    "WORKERS_FILE",
    "ClientPairing",
    "CodeError",
    "CodeStore",
    "Identity",
    "IdentityError",
    "PairedPeer",
    "PairingError",
    "PairingResponder",
    "PeerStore",
    "PeerStoreError",
    "RateLimited",
    "SpoofedPeerError",
    "TrustHome",
    "WorkerPairing",
    "WrongCodeLimiter",
    "call_token",
    "check_pin",
    "check_call_token",
    "default_data_dir",
    "display_code",
    "fingerprint_of_pem",
    "load_or_create_identity",
    "load_or_create_machine_id",
    "new_code",
    "new_peer",
    "normalize_code",
    "open_trust_home",
]
