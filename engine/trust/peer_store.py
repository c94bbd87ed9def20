"""Paired peers, one JSON file (0600) per role.

A coordinator keeps ``workers.json`` (worker id -> pinned certificate + shared secret); a
worker keeps ``clients.json`` (client id -> its fingerprint + shared secret). The same class
serves both: a peer is whoever is at the other end of a pairing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.trust.files import folder_lock, write_private
from engine.trust.identity import is_fingerprint

log = logging.getLogger(__name__)

WORKERS_FILE = "workers.json"
CLIENTS_FILE = "clients.json"
STORE_VERSION = 1


class PeerStoreError(ValueError):
    """A store file that cannot be read; the message names the file and the fault."""


class SpoofedPeerError(Exception):
    """A peer claims a paired id but shows another certificate than the pinned one."""

    def __init__(self, peer_id: str, pinned: str, seen: str):
        self.peer_id, self.pinned, self.seen = peer_id, pinned, seen
        super().__init__(
            f"worker {peer_id!r} shows certificate {seen[:16]}... but {pinned[:16]}... is pinned "
            "for it: refusing (another machine may be pretending to be it; re-pair if it was reinstalled)"
        )


@dataclass(frozen=True)
class PairedPeer:
    peer_id: str
    fingerprint: str
    secret_hex: str  # shared secret from the SPAKE2 pairing
    name: str = ""
    cert_pem: str = ""  # the pinned certificate (coordinator side), used as the TLS root
    paired_at: float = 0.0

    @property
    def secret(self) -> bytes:
        return bytes.fromhex(self.secret_hex)


class PeerStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._peers = self._load()

    def get(self, peer_id: str) -> PairedPeer | None:
        with self._lock:
            self._reload_if_changed()
            return self._peers.get(peer_id)

    def all(self) -> list[PairedPeer]:
        with self._lock:
            self._reload_if_changed()
            return sorted(self._peers.values(), key=lambda p: p.peer_id)

    def put(self, peer: PairedPeer) -> None:
        if not is_fingerprint(peer.fingerprint):
            raise ValueError(f"peer {peer.peer_id!r}: fingerprint must be 64 hex digits")
        with self._lock, folder_lock(self.path.parent):  # another process may pair meanwhile
            self._reload_if_changed()
            self._peers[peer.peer_id] = peer
            self._save()

    def remove(self, peer_id: str) -> bool:
        with self._lock, folder_lock(self.path.parent):
            self._reload_if_changed()
            found = self._peers.pop(peer_id, None) is not None
            if found:
                self._save()
            return found

    def verdict(self, peer_id: str, fingerprint: str) -> str:
        """'paired' (pinned and matching), 'unpaired' (no pin) or 'spoofed' (pin differs)."""
        peer = self.get(peer_id)
        if peer is None:
            return "unpaired"
        return "paired" if peer.fingerprint == fingerprint else "spoofed"

    def require_pinned(self, peer_id: str, fingerprint: str) -> PairedPeer:
        """The paired peer, or SpoofedPeerError / KeyError when it is not the pinned one."""
        peer = self.get(peer_id)
        if peer is None:
            raise KeyError(f"worker {peer_id!r} is not paired; pair it with its code first")
        return check_pin(peer, fingerprint)

    def _file_stamp(self) -> tuple[int, int, int]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return (0, 0, 0)
        # every save replaces the file, so the inode changes even where mtime and size don't
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _reload_if_changed(self) -> None:
        """Another process (or another PeerStore on the same file) may have paired meanwhile."""
        stamp = self._file_stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._peers = self._load()
            except PeerStoreError as e:
                log.warning("%s; keeping the peers read before", e)

    def _load(self) -> dict[str, PairedPeer]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != STORE_VERSION:
                raise PeerStoreError(
                    f"{self.path}: version {data.get('version')!r}, expected {STORE_VERSION}"
                )
            return {pid: PairedPeer(**fields) for pid, fields in data["peers"].items()}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
            raise PeerStoreError(
                f"{self.path}: not a paired-peer store ({type(e).__name__}: {e})"
            ) from None

    def _save(self) -> None:
        data = {"version": STORE_VERSION, "peers": {p: asdict(v) for p, v in self._peers.items()}}
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))
        self._stamp = self._file_stamp()


def check_pin(peer: PairedPeer, fingerprint: str) -> PairedPeer:
    """``peer`` when ``fingerprint`` is its pinned one, else SpoofedPeerError."""
    if peer.fingerprint != fingerprint:
        raise SpoofedPeerError(peer.peer_id, peer.fingerprint, fingerprint)
    return peer


def new_peer(
    peer_id: str, fingerprint: str, secret: bytes, name: str = "", cert_pem: str = ""
) -> PairedPeer:
    return PairedPeer(peer_id, fingerprint, secret.hex(), name, cert_pem, time.time())
