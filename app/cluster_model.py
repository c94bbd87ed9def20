"""The workers the app knows about: the local machine, Bonjour peers and manual adds.

Peer dicts arrive from the engine (``PeerEvent.peer``); this model only merges them and
tells views that the list changed. The local machine is always the first row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, Signal

from engine.discovery.facts import host_facts
from engine.events import PeerEvent

LOCAL_ID = "local"


@dataclass
class Worker:
    """One row of the cluster table; ``raw`` keeps whatever the engine sent."""

    id: str
    name: str
    address: str = ""
    chip: str = ""
    memory_bytes: int = 0
    state: str = "idle"  # idle | busy | offline | unknown
    paired: bool = False
    local: bool = False
    source: str = "bonjour"  # bonjour | manual | local
    raw: dict[str, Any] = field(default_factory=dict)


def local_worker() -> Worker:
    """This machine, always part of the cluster (it runs the local worker processes)."""
    facts = host_facts()
    return Worker(
        id=LOCAL_ID,
        name=f"{facts['host'] or 'This machine'} (this machine)",
        address="local",
        chip=str(facts["chip"]),
        memory_bytes=int(facts["memory_bytes"] or 0),
        paired=True,
        local=True,
        source="local",
        raw=facts,
    )


def worker_from_peer(peer: dict[str, Any]) -> Worker:
    """A row from ``PeerRecord.to_dict()`` (engine/discovery)."""
    state = str(peer.get("state") or "unknown")
    if not peer.get("valid", True):
        state = f"incompatible: {peer.get('problem', '')}".strip(": ")
    return Worker(
        id=str(peer.get("key") or peer.get("address")),
        name=str(peer.get("host") or peer.get("address") or "?"),
        address=str(peer.get("address") or ""),
        chip=str(peer.get("chip") or ""),
        memory_bytes=int(peer.get("memory_bytes") or 0),
        state=state,
        paired=bool(peer.get("paired", False)),
        source="manual" if peer.get("manual") else "bonjour",
        raw=dict(peer),
    )


class ClusterModel(QObject):
    changed = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.local = local_worker()
        self.workers: dict[str, Worker] = {LOCAL_ID: self.local}
        self._paired: set[str] = set()  # ids paired from this window; peer updates keep it

    def rows(self) -> list[Worker]:
        return list(self.workers.values())

    def remote(self) -> list[Worker]:
        return [w for w in self.workers.values() if not w.local]

    def on_peer_event(self, event: PeerEvent) -> None:
        worker = worker_from_peer(event.peer)
        if event.change == "removed":
            if self.workers.pop(worker.id, None) is None:
                return
        else:
            worker.paired = worker.paired or worker.id in self._paired
            self.workers[worker.id] = worker
        self.changed.emit()

    def mark_paired(self, worker_id: str) -> None:
        """This machine holds the worker's pin now (paired, or a paired-channel call worked)."""
        self._paired.add(worker_id)
        worker = self.workers.get(worker_id)
        if worker is not None and not worker.paired:
            worker.paired = True
            self.changed.emit()

    def add_manual(self, address: str) -> Worker:
        worker = Worker(id=address, name=address, address=address, state="unknown", source="manual")
        self.workers.setdefault(address, worker)
        self.changed.emit()
        return self.workers[address]

    def remove(self, worker_id: str) -> None:
        if worker_id != LOCAL_ID and self.workers.pop(worker_id, None) is not None:
            self.changed.emit()

    def total_memory(self) -> int:
        return sum(w.memory_bytes for w in self.workers.values() if w.state != "offline")

    def summary(self, local_processes: int) -> str:
        remote = [w for w in self.remote() if w.state != "offline"]
        gib = self.total_memory() / 2**30
        if not remote:
            return (
                f"Cluster: this machine · {local_processes} local worker processes · {gib:.0f} GiB"
            )
        return f"Cluster: this machine + {len(remote)} Mac{'s' if len(remote) > 1 else ''} · {gib:.0f} GiB total"
