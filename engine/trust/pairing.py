"""SPAKE2 pairing over the code a worker shows, bound to both TLS certificates.

The client (coordinator) is SPAKE2 side A, the worker side B. Both certificate fingerprints go
into the SPAKE2 identities and into the key-confirmation transcript, so a man in the middle
who terminates TLS with its own certificate derives a different key than either end even if
it relays every message: pairing fails unless it knows the code, and it gets one online guess
per attempt. The code itself never leaves either machine. Transport-free: engine.rpc carries
these bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_A, SPAKE2_B
from spake2.spake2 import SPAKEError

PROTOCOL = b"orchard-pair-v1"
SPAKE_MSG_LEN = 33  # side byte + one ed25519 group element


class PairingError(Exception):
    """Pairing failed. ``kind``: wrong_code | invalid | fingerprint | rate_limited | mismatch."""

    def __init__(self, kind: str, message: str, retry_after_s: float = 0.0):
        self.kind = kind
        self.retry_after_s = retry_after_s
        super().__init__(message)


def _ids(client_id: str, client_fp: str, worker_fp: str) -> tuple[bytes, bytes]:
    return (
        b"orchard-client|" + client_id.encode() + b"|" + client_fp.encode(),
        b"orchard-worker|" + worker_fp.encode(),
    )


def _transcript(*parts: bytes) -> bytes:
    h = hashlib.sha256(PROTOCOL)
    for part in parts:  # length-prefixed, so no two different transcripts hash alike
        h.update(struct.pack(">I", len(part)))
        h.update(part)
    return h.digest()


class SessionKeys:
    """Keys both ends derive from the SPAKE2 key and the transcript."""

    def __init__(self, spake_key: bytes, transcript: bytes):
        okm = HKDF(hashes.SHA256(), 96, salt=transcript, info=PROTOCOL + b" keys").derive(spake_key)
        self._client_key, self._worker_key, self.secret = okm[:32], okm[32:64], okm[64:]

    def client_confirm(self) -> bytes:
        return hmac.new(self._client_key, b"client confirms", hashlib.sha256).digest()

    def worker_confirm(self) -> bytes:
        return hmac.new(self._worker_key, b"worker confirms", hashlib.sha256).digest()


def _finish(spake: SPAKE2_A | SPAKE2_B, msg: bytes) -> bytes:
    if len(msg) != SPAKE_MSG_LEN:
        raise PairingError(
            "invalid", f"SPAKE2 message: expected {SPAKE_MSG_LEN} bytes, got {len(msg)}"
        )
    try:
        return spake.finish(msg)
    except (SPAKEError, ValueError, AssertionError) as e:
        raise PairingError("invalid", f"SPAKE2 message rejected: {type(e).__name__}") from None


class ClientPairing:
    """The coordinator's half: start() -> message, confirm() -> confirmation, finish() -> secret."""

    def __init__(self, code: str, client_id: str, client_fp: str, worker_fp: str):
        self.client_id, self.client_fp, self.worker_fp = client_id, client_fp, worker_fp
        id_a, id_b = _ids(client_id, client_fp, worker_fp)
        self._spake = SPAKE2_A(code.encode("ascii"), idA=id_a, idB=id_b)
        self._msg_a = b""
        self._keys: SessionKeys | None = None

    def start(self) -> bytes:
        self._msg_a = self._spake.start()
        return self._msg_a

    def confirm(self, worker_id: str, msg_b: bytes) -> bytes:
        key = _finish(self._spake, msg_b)
        transcript = _transcript(
            self.client_id.encode(),
            self.client_fp.encode(),
            worker_id.encode(),
            self.worker_fp.encode(),
            self._msg_a,
            msg_b,
        )
        self._keys = SessionKeys(key, transcript)
        return self._keys.client_confirm()

    def finish(self, worker_confirm: bytes) -> bytes:
        if self._keys is None:
            raise PairingError("invalid", "finish() before confirm()")
        if not hmac.compare_digest(worker_confirm, self._keys.worker_confirm()):
            raise PairingError(
                "mismatch", "the worker's key confirmation does not match: not paired"
            )
        return self._keys.secret


class WorkerPairing:
    """The worker's half for one attempt: answer the client, then check its confirmation."""

    def __init__(
        self,
        code: str,
        client_id: str,
        client_fp: str,
        worker_id: str,
        worker_fp: str,
        msg_a: bytes,
    ):
        id_a, id_b = _ids(client_id, client_fp, worker_fp)
        spake = SPAKE2_B(code.encode("ascii"), idA=id_a, idB=id_b)
        self.msg_b = spake.start()
        key = _finish(spake, msg_a)
        transcript = _transcript(
            client_id.encode(),
            client_fp.encode(),
            worker_id.encode(),
            worker_fp.encode(),
            msg_a,
            self.msg_b,
        )
        self._keys = SessionKeys(key, transcript)

    def check(self, client_confirm: bytes) -> tuple[bytes, bytes]:
        """(worker confirmation, shared secret), or PairingError('wrong_code')."""
        if not hmac.compare_digest(client_confirm, self._keys.client_confirm()):
            raise PairingError("wrong_code", "wrong pairing code")
        return self._keys.worker_confirm(), self._keys.secret
