"""`orchard worker` on a network: TLS, pairing, signed calls, Bonjour, busy/idle live.

The worker trusts no caller by default: it serves gRPC over TLS with its own identity
(engine/trust), only the Pairing service, health and the peer Collective calls (which check
the run's group token) are open, and everything else must be signed with a secret made by
pairing with the code this process shows on its terminal (never in a log).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from engine.trust import TrustHome, display_code, open_trust_home
from engine.worker.info import worker_info
from engine.worker.job import JobRunner

log = logging.getLogger(__name__)

DEFAULT_PORT = 50051
MIN_UPDATE_GAP_S = 2.5  # between two TXT updates (see LiveAdvertisement._flush)
CODE_LINE = "Pairing code: "  # tests read the code from the terminal after this prefix


class LiveAdvertisement:
    """The Bonjour advertisement, re-announced when the worker turns busy/idle or gets paired.

    Updates run on their own thread: a gRPC call that starts a job must never wait on mDNS."""

    def __init__(self, advertiser: Any):
        self.advertiser = advertiser
        self._lock = threading.Lock()  # guards _target and _wanted; never held across mDNS
        self._flush_lock = threading.Lock()  # one update at a time, latest values last
        record = advertiser.record
        self._target: dict[str, Any] = {"state": record.state, "paired": record.paired}
        self._wanted: dict[str, Any] = {}
        self._last = 0.0

    def set(self, **fields: Any) -> None:
        with self._lock:
            changes = {k: v for k, v in fields.items() if self._target.get(k) != v}
            if not changes:
                return
            self._target.update(changes)
            self._wanted.update(changes)
        threading.Thread(target=self._flush, name="advertise-update", daemon=True).start()

    def _flush(self) -> None:
        with self._flush_lock:
            # Space updates out: an mDNS cache flushes a replaced record only when it is over
            # 1 s old, and ignores an arriving record it still holds, so busy/idle/busy/idle
            # within a second would leave browsers showing a stale state.
            time.sleep(max(0.0, MIN_UPDATE_GAP_S - (time.monotonic() - self._last)))
            with self._lock:
                changes, self._wanted = self._wanted, {}
            if not changes:
                return
            try:
                self.advertiser.update(**changes)
                self._last = time.monotonic()
                log.info("advertisement updated: %s", changes)
            except Exception:  # noqa: BLE001 - a stale TXT must not stop the worker
                log.warning("could not update the advertisement", exc_info=True)


def show_code(home: TrustHome, out: TextIO, shown: str) -> str:
    """Print the current pairing code when it differs from ``shown`` (it rotates after a
    lockout). Written to the terminal only: codes never go to logs."""
    code = home.codes().current()
    if code != shown:
        out.write(f"{CODE_LINE}{display_code(code)}   (enter it in `orchard pair` or the app)\n")
        out.flush()
    return code


def serve_remote(args: argparse.Namespace, data_dir: Path, done: threading.Event) -> int:
    """Serve until ``done`` is set; returns the exit status."""
    from engine.discovery import Advertiser, record_from_worker_info
    from engine.rpc.paired_auth import PairedAuthInterceptor
    from engine.rpc.server import serve
    from engine.rpc.tls import server_credentials
    from engine.rpc.worker_service import WorkerServicer

    home = open_trust_home(args.trust_dir)
    clients = home.clients()
    info = worker_info(home.machine_id)
    live: list[LiveAdvertisement] = []
    runner = JobRunner(
        data_dir,
        on_busy=lambda busy: [a.set(state="busy" if busy else "idle") for a in live],
        confine_paths=True,
        job_process=True,
        job_lease_s=args.job_lease_s,
        warm_spare=not args.no_warm_spare,
    )
    host, port = args.host or "0.0.0.0", DEFAULT_PORT if args.port is None else args.port
    try:
        server = serve(
            WorkerServicer(runner, runner.store, lambda: info),
            runner.collective_servicer(),
            token="",
            host=host,
            port=port,
            credentials=server_credentials(home.identity),
            auth=PairedAuthInterceptor(clients),
            pairing=home.responder(),
        )
    except (OSError, RuntimeError) as e:  # grpc reports a taken port as RuntimeError
        log.error(
            "cannot listen on %s:%d (%s): is another worker running? try --port", host, port, e
        )
        return 2
    out = sys.stdout
    out.write(
        f"Orchard worker {home.machine_id} on port {server.port} (TLS, certificate "
        f"{home.identity.fingerprint[:16]}...)\n"
    )
    shown = show_code(home, out, "")
    advertiser = None
    if not args.no_advertise:
        record = record_from_worker_info(
            info, fingerprint=home.identity.fingerprint, paired=bool(clients.all())
        )
        kwargs = {"service_type": args.service_type} if args.service_type else {}
        advertiser = Advertiser(record, server.port, **kwargs)
        advertiser.start()
        live.append(LiveAdvertisement(advertiser))
    try:
        while not done.wait(0.5):
            shown = show_code(home, out, shown)
            for a in live:
                a.set(paired=bool(clients.all()))
    finally:
        log.info("shutting down")
        if advertiser is not None:
            advertiser.stop()
        runner.close()
        server.stop(grace_s=2.0)
    return 0
