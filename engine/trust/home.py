"""One machine's trust folder: identity, id, pairing code and paired peers, in one place.

<data dir>/id                  stable machine id (worker id when it runs a worker)
<data dir>/tls/key.pem         EC P-256 key (0600)
<data dir>/tls/cert.pem        self-signed certificate (0600)
<data dir>/pairing_code        the code this worker shows (0600)
<data dir>/clients.json        worker side: coordinators paired with it
<data dir>/workers.json        coordinator side: workers it paired with (pins + secrets)
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from engine.trust.code import CodeStore
from engine.trust.files import default_data_dir, private_dir
from engine.trust.identity import Identity, load_or_create_identity, load_or_create_machine_id
from engine.trust.peer_store import CLIENTS_FILE, WORKERS_FILE, PeerStore
from engine.trust.ratelimit import WrongCodeLimiter
from engine.trust.responder import PairingResponder


@dataclass(frozen=True)
class TrustHome:
    folder: Path
    machine_id: str
    identity: Identity

    def workers(self) -> PeerStore:
        return PeerStore(self.folder / WORKERS_FILE)

    def clients(self) -> PeerStore:
        return PeerStore(self.folder / CLIENTS_FILE)

    def codes(self) -> CodeStore:
        return CodeStore(self.folder)

    def responder(self, limiter: WrongCodeLimiter | None = None) -> PairingResponder:
        return PairingResponder(
            self.identity, self.machine_id, self.codes(), self.clients(), limiter
        )


def open_trust_home(folder: str | Path | None = None) -> TrustHome:
    """Open (and on first start create) the trust folder; ``None`` means the default data dir."""
    root = private_dir(Path(folder) if folder is not None else default_data_dir())
    machine_id = load_or_create_machine_id(root)
    identity = load_or_create_identity(root / "tls", common_name=f"orchard-{socket.gethostname()}")
    return TrustHome(root, machine_id, identity)
