"""The worker's pairing desk: sessions, the code, the wrong-code limiter and the client list.

The gRPC Pairing servicer only translates messages to these two calls. A session that is
started but never confirmed counts as a wrong guess when it expires, so opening sessions and
walking away is not a free way around the limiter.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.trust.code import CodeStore
from engine.trust.identity import Identity, is_fingerprint
from engine.trust.pairing import PairingError, WorkerPairing
from engine.trust.peer_store import CLIENTS_FILE, PeerStore, new_peer
from engine.trust.ratelimit import RateLimited, WrongCodeLimiter

log = logging.getLogger(__name__)

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass
class _Session:
    attempt: WorkerPairing
    client_id: str
    client_name: str
    client_fp: str
    expires: float


class PairingResponder:
    def __init__(
        self,
        identity: Identity,
        worker_id: str,
        codes: CodeStore,
        clients: PeerStore,
        limiter: WrongCodeLimiter | None = None,
        session_ttl_s: float = 30.0,
        max_sessions: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.identity, self.worker_id, self.codes, self.clients = (
            identity,
            worker_id,
            codes,
            clients,
        )
        self.limiter = limiter or WrongCodeLimiter(clock=clock)
        if self.limiter.on_lockout is None:
            self.limiter.on_lockout = self._lockout
        self.session_ttl_s, self.max_sessions, self.clock = session_ttl_s, max_sessions, clock
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    @classmethod
    def in_folder(
        cls, identity: Identity, worker_id: str, folder: str | Path, **kw: object
    ) -> PairingResponder:
        folder = Path(folder)
        return cls(identity, worker_id, CodeStore(folder), PeerStore(folder / CLIENTS_FILE), **kw)  # type: ignore[arg-type]

    def start(
        self, client_id: str, client_name: str, client_fp: str, seen_worker_fp: str, msg_a: bytes
    ) -> tuple[str, bytes]:
        """Answer a client's SPAKE2 message: (session id, the worker's SPAKE2 message)."""
        if not _CLIENT_ID.match(client_id):
            raise PairingError(
                "invalid", "client_id: expected 1-64 letters, digits, '.', '_' or '-'"
            )
        if not is_fingerprint(client_fp):
            raise PairingError("invalid", "client_fingerprint: expected 64 lowercase hex digits")
        if seen_worker_fp and seen_worker_fp != self.identity.fingerprint:
            log.warning(
                "pairing from %s saw certificate %s..., not ours", client_id, seen_worker_fp[:16]
            )
            raise PairingError(
                "fingerprint",
                "the certificate you saw is not this worker's: something is in between",
            )
        self._expire()
        try:
            self.limiter.check()
        except RateLimited as e:
            raise PairingError("rate_limited", str(e), e.retry_after_s) from None
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                raise PairingError(
                    "rate_limited", "too many pairing attempts at once", self.session_ttl_s
                )
        attempt = WorkerPairing(
            self.codes.current(),
            client_id,
            client_fp,
            self.worker_id,
            self.identity.fingerprint,
            msg_a,
        )
        session_id = secrets.token_hex(16)
        with self._lock:
            self._sessions[session_id] = _Session(
                attempt, client_id, client_name[:128], client_fp, self.clock() + self.session_ttl_s
            )
        return session_id, attempt.msg_b

    def finish(self, session_id: str, client_confirm: bytes) -> bytes:
        """Check the client's confirmation; on success store the client and confirm back."""
        self._expire()
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise PairingError("invalid", "unknown or expired pairing session; start again")
        try:
            worker_confirm, secret = session.attempt.check(client_confirm)
        except PairingError:
            log.warning("wrong pairing code from client %s", session.client_id)
            self.limiter.failure()
            raise
        self.limiter.success()
        self.clients.put(
            new_peer(session.client_id, session.client_fp, secret, session.client_name)
        )
        log.info("paired with client %s (%s)", session.client_id, session.client_name)
        return worker_confirm

    def _expire(self) -> None:
        now = self.clock()
        with self._lock:
            gone = [sid for sid, s in self._sessions.items() if s.expires <= now]
            for sid in gone:
                del self._sessions[sid]
        for _ in gone:
            self.limiter.failure()

    def _lockout(self) -> None:
        with self._lock:
            self._sessions.clear()
        self.codes.rotate()
        log.warning(
            "pairing locked for %.0f s after wrong codes; a new code was made",
            self.limiter.lockout_s,
        )
