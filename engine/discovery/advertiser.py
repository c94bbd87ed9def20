"""Advertise this worker as ``_orchard._tcp.local.`` with what it is in the TXT record.

Records carry a short TTL (default 60 s, not zeroconf's 75 min) so a worker that vanishes
without a goodbye (power cut, cable pulled) drops out of every browser within about a minute.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import replace
from typing import Any

from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

from engine.discovery.facts import local_ipv4_addresses
from engine.discovery.record import SERVICE_TYPE, PeerRecord, encode_txt

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 60


def _label(text: str, limit: int = 63) -> str:
    """A DNS label: letters, digits and '-', at most 63 bytes."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")[:limit] or "orchard"


class Advertiser:
    """Register, update live and withdraw one worker's advertisement."""

    def __init__(
        self,
        info: PeerRecord,
        port: int,
        *,
        interfaces: list[str] | None = None,
        ttl_s: int = DEFAULT_TTL_S,
        service_type: str = SERVICE_TYPE,
    ):
        if not 0 < port < 65536:
            raise ValueError(f"port {port}: expected 1-65535")
        encode_txt(info)  # reject a bad id/state/fingerprint now, not on the zeroconf thread
        self.service_type = service_type
        self.ttl_s = ttl_s
        self.interfaces = interfaces
        self.addresses = list(interfaces) if interfaces else local_ipv4_addresses()
        self._record = replace(info, port=port, addresses=tuple(self.addresses))
        instance = _label(f"{info.host or 'orchard'}-{info.worker_id[:8]}")
        self.service_name = f"{instance}.{service_type}"
        self._server = f"{_label('orchard-' + info.worker_id)}.local."
        self._zc: Zeroconf | None = None
        self._info: ServiceInfo | None = None
        self._lock = threading.Lock()

    @property
    def record(self) -> PeerRecord:
        return self._record

    def start(self) -> None:
        """Probe for a unique name and announce (takes about 1.5 s, as mDNS requires)."""
        with self._lock:
            if self._zc is not None:
                return
            choice = self.interfaces if self.interfaces else InterfaceChoice.All
            self._zc = Zeroconf(interfaces=choice, ip_version=IPVersion.V4Only)
            self._info = self._service_info(self.service_name)
            self._zc.register_service(self._info, allow_name_change=True)
            self.service_name = self._info.name  # probing may have renamed a clash
            log.info(
                "advertising %s on port %d (%s)",
                self.service_name,
                self._record.port,
                self.addresses,
            )

    def update(self, **changes: Any) -> PeerRecord:
        """Change fields (e.g. state="busy", paired=True) and re-announce them at once."""
        with self._lock:
            record = replace(self._record, **changes)
            encode_txt(record)
            self._record = record
            if self._zc is not None:
                self._info = self._service_info(self.service_name)
                assert self._zc.loop is not None
                # Wait for the registry, not for the three announcements (~0.5 s) to go out.
                done = asyncio.run_coroutine_threadsafe(
                    self._zc.async_update_service(self._info), self._zc.loop
                )
                done.result(timeout=5)
            return record

    def stop(self) -> None:
        """Say goodbye (TTL 0) so browsers drop this worker now, then close the sockets."""
        with self._lock:
            zc, info, self._zc, self._info = self._zc, self._info, None, None
        if zc is None:
            return
        try:
            if info is not None:
                zc.unregister_service(info)
        finally:
            zc.close()

    def _service_info(self, name: str) -> ServiceInfo:
        return ServiceInfo(
            self.service_type,
            name,
            port=self._record.port,
            properties=encode_txt(self._record),
            server=self._server,
            parsed_addresses=self.addresses,
            host_ttl=self.ttl_s,
            other_ttl=self.ttl_s,
        )

    def __enter__(self) -> Advertiser:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
