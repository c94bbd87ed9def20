"""Browse ``_orchard._tcp.local.`` and hand out plain PeerRecords as workers come and go.

Everything zeroconf does runs on its own event-loop thread; callbacks run on one dispatcher
thread, in order, so a slow consumer never stalls the network side. Liveness: zeroconf only
drops a service when its PTR record expires (at least 19 minutes), so every ``check_interval_s``
the browser looks at each peer's SRV record: half-way through its TTL it asks again, and once
it has expired the peer is removed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from zeroconf import (
    DNSOutgoing,
    DNSQuestion,
    InterfaceChoice,
    IPVersion,
    ServiceStateChange,
    Zeroconf,
    current_time_millis,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo
from zeroconf.const import _CLASS_IN, _FLAGS_QR_QUERY, _TYPE_SRV, _TYPE_TXT

from engine.discovery.record import SERVICE_TYPE, PeerRecord, parse_txt
from engine.events import EventSink, PeerEvent

log = logging.getLogger(__name__)

ChangeCallback = Callable[[str, PeerRecord], None]
_QUESTIONS_PER_PACKET = 16


def record_from_info(info: AsyncServiceInfo, text: bytes | None = None) -> PeerRecord:
    """``text``: the TXT to read instead of the one ``info`` picked (the newest, see
    Browser._newest_txt)."""
    record = parse_txt(
        text if text is not None else info.text or b"",
        service_name=info.name,
        addresses=tuple(info.parsed_addresses(IPVersion.V4Only)),
        port=info.port or 0,
        last_seen=time.time(),
    )
    if record.valid and not record.port:
        record = replace(record, valid=False, problem="SRV record has no port")
    return record


class Browser:
    def __init__(
        self,
        on_change: ChangeCallback | None = None,
        *,
        on_event: EventSink | None = None,
        service_type: str = SERVICE_TYPE,
        interfaces: list[str] | None = None,
        check_interval_s: float = 5.0,
        resolve_timeout_s: float = 3.0,
        max_peers: int = 1024,
        retry_lost_s: float = 15.0,
        forget_lost_s: float = 600.0,
    ):
        self.on_change, self.on_event = on_change, on_event
        self.service_type = service_type
        self.interfaces = interfaces
        self.check_interval_s = check_interval_s
        self.resolve_timeout_ms = int(resolve_timeout_s * 1000)
        self.max_peers = max_peers
        self.retry_lost_s, self.forget_lost_s = retry_lost_s, forget_lost_s
        self._lost: dict[str, tuple[float, float]] = {}  # expired name -> (lost at, last asked)
        self._peers: dict[str, PeerRecord] = {}
        self._lock = threading.Lock()
        self._resolving: dict[str, asyncio.Task] = {}
        self._dirty: set[str] = set()
        self._txt: dict[str, bytes] = {}  # the TXT each peer was last read from (loop only)
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._zc: Zeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._dispatcher = threading.Thread(
            target=self._dispatch, name="orchard-discovery", daemon=True
        )

    # ---- public, any thread -------------------------------------------------------------
    def start(self) -> Browser:
        if self._zc is not None:
            return self
        choice = self.interfaces if self.interfaces else InterfaceChoice.All
        self._zc = Zeroconf(interfaces=choice, ip_version=IPVersion.V4Only)
        self._dispatcher.start()
        assert self._zc.loop is not None
        asyncio.run_coroutine_threadsafe(self._async_start(), self._zc.loop).result(timeout=10)
        return self

    def close(self) -> None:
        zc, self._zc = self._zc, None
        if zc is not None:
            assert zc.loop is not None
            try:
                asyncio.run_coroutine_threadsafe(self._async_close(), zc.loop).result(timeout=10)
            finally:
                zc.close()
        if self._dispatcher.is_alive():
            self._events.put(None)
            self._dispatcher.join(timeout=10)

    def peers(self) -> list[PeerRecord]:
        with self._lock:
            return sorted(self._peers.values(), key=lambda p: (p.host, p.worker_id, p.key))

    def add_manual(self, host: str, port: int, worker_id: str = "") -> PeerRecord:
        """A worker given by address where multicast is blocked; the rpc layer probes it."""
        host = host.strip()
        if not host or any(c.isspace() for c in host):
            raise ValueError(f"host {host!r}: expected a host name or IP address")
        if not 0 < int(port) < 65536:
            raise ValueError(f"port {port}: expected 1-65535")
        record = PeerRecord(
            worker_id=worker_id, host=host, port=int(port), protocol="", manual=True
        )
        self._upsert(record)
        return record

    def update_manual(self, host: str, port: int, **fields: object) -> PeerRecord:
        """Fill in what probing a manual peer found (id, chip, fingerprint...)."""
        with self._lock:
            old = self._peers.get(f"{host}:{port}")
        if old is None or not old.manual:
            raise KeyError(f"{host}:{port} is not a manually added peer")
        record = replace(old, **fields)  # type: ignore[arg-type]
        self._upsert(record)
        return record

    def remove_manual(self, host: str, port: int) -> None:
        self._remove(f"{host}:{port}", "removed by the user")

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- on zeroconf's loop -------------------------------------------------------------
    async def _async_start(self) -> None:
        self._browser = AsyncServiceBrowser(
            self._zc, [self.service_type], handlers=[self._on_service]
        )
        self._schedule_check()

    async def _async_close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._resolving.values()):
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()

    def _on_service(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            task = self._resolving.pop(name, None)
            if task is not None:
                task.cancel()
            self._remove(name, "goodbye")
        else:
            self._schedule_resolve(name)

    def _newest_txt(self, name: str) -> bytes | None:
        """The TXT announced last. A replaced TXT lingers up to 1 s in the cache (RFC 6762
        10.2) and zeroconf's own lookup may return it; a TXT whose text the cache still
        holds (busy -> idle -> busy within seconds) fires no browser event at all."""
        if self._zc is None:
            return None
        now = current_time_millis()
        cached = self._zc.cache.async_all_by_details(name, _TYPE_TXT, _CLASS_IN)
        alive = [r for r in cached if not r.is_expired(now)]
        return max(alive, key=lambda r: r.created).text if alive else None  # type: ignore[attr-defined]

    def _schedule_resolve(self, name: str) -> None:
        if name in self._resolving:
            self._dirty.add(name)  # resolve again once the running one ends
            return
        with self._lock:
            full = (
                name not in self._peers
                and len(self._peers) + len(self._resolving) >= self.max_peers
            )
        if full:
            log.warning("%s skipped: already tracking %d peers (max_peers)", name, self.max_peers)
            return
        self._resolving[name] = asyncio.get_running_loop().create_task(self._resolve(name))

    async def _resolve(self, name: str) -> None:
        try:
            while True:
                self._dirty.discard(name)
                info = AsyncServiceInfo(self.service_type, name)
                if await info.async_request(self._zc, self.resolve_timeout_ms):
                    text = self._newest_txt(name)
                    self._txt[name] = text if text is not None else info.text or b""
                    self._upsert(record_from_info(info, text))
                else:
                    log.info(
                        "%s: no SRV/TXT/address answer in %d ms; skipped",
                        name,
                        self.resolve_timeout_ms,
                    )
                if name not in self._dirty:
                    break
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a hostile record must never kill discovery
            log.warning(
                "%s: could not read its records (%s: %s); skipped", name, type(e).__name__, e
            )
        finally:
            if self._resolving.get(name) is asyncio.current_task():
                del self._resolving[name]

    def _schedule_check(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.check_interval_s, self._check)

    def _check(self) -> None:
        """Drop peers whose SRV record expired; ask again for ones half-way to expiry, and
        now and then for lately lost ones (zeroconf will not re-announce a PTR it still has)."""
        try:
            zc = self._zc
            if zc is None:
                return
            now, clock = current_time_millis(), time.monotonic()
            ask = []
            for record in self.peers():
                if record.manual:
                    continue
                newest = self._newest_txt(record.key)
                if newest is not None and newest != self._txt.get(record.key):
                    self._schedule_resolve(record.key)  # a TXT update that fired no event
                srv = zc.cache.get_by_details(record.key, _TYPE_SRV, _CLASS_IN)
                if srv is None or srv.is_expired(now):
                    self._remove(record.key, "expired (no answer within its TTL)")
                    self._lost[record.key] = (clock, clock)
                elif srv.is_stale(now):
                    ask.append(record.key)
            for name, (lost_at, asked_at) in list(self._lost.items()):
                srv = zc.cache.get_by_details(name, _TYPE_SRV, _CLASS_IN)
                if srv is not None and not srv.is_expired(now):
                    # An answer refreshed the old cache entry, which fires no browser event.
                    self._schedule_resolve(name)
                elif clock - lost_at > self.forget_lost_s:
                    del self._lost[name]
                elif clock - asked_at >= self.retry_lost_s:
                    self._lost[name] = (lost_at, clock)
                    ask.append(name)
            self._ask(zc, ask)
        finally:
            if self._zc is not None:
                self._schedule_check()

    def _ask(self, zc: Zeroconf, names: list[str]) -> None:
        for i in range(0, len(names), _QUESTIONS_PER_PACKET):
            out = DNSOutgoing(_FLAGS_QR_QUERY)
            for name in names[i : i + _QUESTIONS_PER_PACKET]:
                out.add_question(DNSQuestion(name, _TYPE_SRV, _CLASS_IN))
                out.add_question(DNSQuestion(name, _TYPE_TXT, _CLASS_IN))
            zc.async_send(out)

    # ---- shared state -------------------------------------------------------------------
    def _upsert(self, record: PeerRecord) -> None:
        record = replace(record, last_seen=time.time())
        self._lost.pop(record.key, None)
        with self._lock:
            old = self._peers.get(record.key)
            self._peers[record.key] = record
        if old is None:
            if not record.valid:
                log.warning("%s: invalid advertisement: %s", record.key, record.problem)
            self._events.put(("added", record))
        elif old != record:  # last_seen does not take part in ==
            self._events.put(("updated", record))

    def _remove(self, key: str, why: str) -> None:
        self._txt.pop(key, None)
        with self._lock:
            old = self._peers.pop(key, None)
        if old is not None:
            log.info("%s gone: %s", key, why)
            self._events.put(("removed", old))

    def _dispatch(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            change, record = item
            for fn, arg in (
                (self.on_change, (change, record)),
                (self.on_event, (PeerEvent(change, record.to_dict()),)),
            ):
                if fn is None:
                    continue
                try:
                    fn(*arg)
                except Exception:
                    log.exception("discovery callback failed on %s %s", change, record.key)
