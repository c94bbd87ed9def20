"""`orchard discover`: list Orchard workers on the local network as a table.

Paired is read from this machine's workers.json: "yes" when the worker's certificate matches
the pinned one, "MISMATCH" when a worker claims a paired id with another certificate
(something may be impersonating it), "no" otherwise.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

from engine.discovery import PROTOCOL_VERSION, Browser, PeerRecord
from engine.trust.files import default_data_dir
from engine.trust.peer_store import WORKERS_FILE, PeerStore, PeerStoreError

log = logging.getLogger(__name__)

COLUMNS = ("id", "host", "address", "chip", "memory", "state", "paired")


def _memory(n: int) -> str:
    return f"{n / 2**30:.0f} GB" if n else "?"


def _row(peer: PeerRecord, verdict: Callable[[PeerRecord], str]) -> tuple[str, ...]:
    if not peer.valid:
        state = f"invalid: {peer.problem}"
    elif peer.protocol and peer.protocol != PROTOCOL_VERSION:
        state = f"protocol {peer.protocol} (need {PROTOCOL_VERSION})"
    else:
        state = peer.state + (" (manual)" if peer.manual else "")
    return (
        peer.worker_id or "?",
        peer.host or "?",
        peer.address,
        peer.chip or "?",
        _memory(peer.memory_bytes),
        state,
        verdict(peer),
    )


def format_table(peers: list[PeerRecord], verdict: Callable[[PeerRecord], str]) -> str:
    if not peers:
        return "no Orchard workers found (is `orchard worker` running? is multicast blocked?)"
    rows = [COLUMNS, *(_row(p, verdict) for p in peers)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def store_verdict(store: PeerStore | None) -> Callable[[PeerRecord], str]:
    def verdict(peer: PeerRecord) -> str:
        if store is None or not peer.worker_id:
            return "no"
        return {"paired": "yes", "spoofed": "MISMATCH", "unpaired": "no"}[
            store.verdict(peer.worker_id, peer.fingerprint)
        ]

    return verdict


def _open_store() -> PeerStore | None:
    path = default_data_dir() / WORKERS_FILE
    try:
        return PeerStore(path) if path.exists() else None
    except PeerStoreError as e:
        log.warning("%s", e)
        return None


def discover_main(timeout_s: float = 3.0, watch: bool = False) -> int:
    """Browse for ``timeout_s`` and print the table; with ``watch`` reprint on every change
    until Ctrl-C. Returns 0 (finding nobody is an answer, not an error)."""
    changed = threading.Event()
    verdict = store_verdict(_open_store())
    out = sys.stdout
    with Browser(lambda change, peer: changed.set()) as browser:
        time.sleep(max(0.0, timeout_s))
        out.write(format_table(browser.peers(), verdict) + "\n")
        out.flush()
        if not watch:
            return 0
        try:
            while True:
                if changed.wait(timeout=1.0):
                    time.sleep(0.3)  # let a burst of changes settle into one reprint
                    changed.clear()
                    out.write(
                        f"\n-- {time.strftime('%H:%M:%S')} --\n{format_table(browser.peers(), verdict)}\n"
                    )
                    out.flush()
        except KeyboardInterrupt:
            return 0
