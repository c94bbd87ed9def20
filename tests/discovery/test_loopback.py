"""Advertiser and Browser over real multicast on 127.0.0.1 in this process.

Each test browses its own service type, so other tests (and other Orchard processes on this
machine) are invisible to it.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from engine.discovery import Advertiser, Browser, PeerRecord
from engine.events import PeerEvent
from tests.discovery.collect import Collector

LO = ["127.0.0.1"]
FP = "ef" * 32


def _record(worker_id: str, **kw: object) -> PeerRecord:
    fields: dict = {
        "host": f"host-{worker_id}",
        "chip": "M4",
        "memory_bytes": 1 << 34,
        "fingerprint": FP,
    }
    return PeerRecord(worker_id=worker_id, **{**fields, **kw})


@pytest.fixture
def browse(service_type):
    made = []

    def start(**kw: object) -> tuple[Browser, Collector]:
        got = Collector()
        b = Browser(
            got, service_type=service_type, interfaces=LO, check_interval_s=1.0, **kw
        ).start()  # type: ignore[arg-type]
        made.append(b)
        return b, got

    yield start
    for b in made:
        b.close()


@pytest.fixture
def raw_zc():
    zc = Zeroconf(interfaces=LO, ip_version=IPVersion.V4Only)
    yield zc
    zc.close()


def _raw_info(service_type: str, name: str, props: bytes | dict, port: int = 5000) -> ServiceInfo:
    return ServiceInfo(
        service_type, f"{name}.{service_type}", port=port, properties=props,
        server=f"{name}.local.", parsed_addresses=LO, host_ttl=30, other_ttl=30,
    )  # fmt: skip


def test_advertised_worker_appears_updates_and_leaves_with_peer_events(service_type):
    got, events = Collector(), []
    browser = Browser(got, on_event=events.append, service_type=service_type, interfaces=LO).start()
    try:
        with Advertiser(_record("w1"), 5001, interfaces=LO, service_type=service_type) as adv:
            got.wait_until(lambda ev: ("added", "w1") in [(c, r.worker_id) for c, r in ev], 10)
            (peer,) = browser.peers()
            assert (peer.address, peer.chip, peer.memory_bytes, peer.fingerprint) == (
                "127.0.0.1:5001",
                "M4",
                1 << 34,
                FP,
            )
            assert peer.valid and peer.state == "idle" and not peer.paired and not peer.manual
            adv.update(state="busy", paired=True)
            got.wait_until(lambda ev: ev[-1][0] == "updated" and ev[-1][1].state == "busy", 10)
            assert browser.peers()[0].paired
        got.wait_until(lambda ev: ev[-1][0] == "removed", 10)
        assert browser.peers() == []
    finally:
        browser.close()
    assert all(isinstance(e, PeerEvent) for e in events)
    assert [e.change for e in events] == [c for c, _ in got.events]
    assert events[0].peer["worker_id"] == "w1" and events[0].peer["address"] == "127.0.0.1:5001"


def test_long_text_is_truncated_to_fit_a_txt_item(browse, service_type):
    browser, got = browse()
    long_chip = "Apple M2 Ultra with a very long marketing name " * 10
    with Advertiser(_record("w9", chip=long_chip), 5009, interfaces=LO, service_type=service_type):
        got.wait_until(lambda ev: len(ev) >= 1, 10)
    peer = got.events[0][1]
    assert peer.valid and peer.truncated == ("chip",)
    assert long_chip.startswith(peer.chip) and len(f"chip={peer.chip}".encode()) <= 254


BAD_TXT = {
    "cut": (b"\x20id=w-cut", "claims 32 bytes"),
    "notutf8": (b"\x05id=\xff\xfe", "not UTF-8"),
    "huge": (b"".join(bytes([250]) + b"k%d=" % i + b"x" * 247 for i in range(6)), "limit 1300"),
    "nofp": ({"id": "w-nofp", "pv": "1"}, "no 'fp'"),
    "badmem": ({"id": "w-mem", "pv": "1", "fp": FP, "mem": "lots"}, "mem"),
    "badid": ({"id": "../../etc", "pv": "1", "fp": FP}, "TXT id"),
}


def test_malformed_and_oversized_txt_give_invalid_peers_not_exceptions(
    browse, raw_zc, service_type
):
    browser, got = browse()
    infos = [_raw_info(service_type, name, props) for name, (props, _) in BAD_TXT.items()]
    infos.append(_raw_info(service_type, "good", {"id": "w-good", "pv": "1", "fp": FP, "mem": "8"}))
    for info in infos:
        raw_zc.register_service(info, cooperating_responders=True)
    got.wait_until(lambda ev: len({r.key for _, r in ev}) == len(infos), 15)
    by_name = {p.service_name.split(".")[0]: p for p in browser.peers()}
    for name, (_, reason) in BAD_TXT.items():
        assert not by_name[name].valid, name
        assert reason in by_name[name].problem, (name, by_name[name].problem)
    assert by_name["good"].valid and by_name["good"].memory_bytes == 8


def test_two_hundred_services_at_once(browse, raw_zc, service_type):
    browser, got = browse()
    infos = [
        _raw_info(service_type, f"bulk{i:03d}", {"id": f"b{i}", "pv": "1", "fp": FP}, port=6000 + i)
        for i in range(200)
    ]

    async def register_all() -> None:
        pending = [
            await raw_zc.async_register_service(i, cooperating_responders=True) for i in infos
        ]
        await asyncio.gather(*pending)

    t0 = time.monotonic()
    asyncio.run_coroutine_threadsafe(register_all(), raw_zc.loop).result(timeout=60)
    got.wait_until(lambda ev: len({r.key for c, r in ev if c == "added"}) == 200, 60)
    print(f"200 services registered and browsed in {time.monotonic() - t0:.2f} s")
    peers = browser.peers()
    assert len(peers) == 200 and all(p.valid for p in peers)
    assert sorted(p.port for p in peers) == list(range(6000, 6200))


def _well_formed(events: list[tuple[str, PeerRecord]]) -> bool:
    """Per peer: added first, never added twice without a removal, never updated while absent."""
    present: set[str] = set()
    for change, record in events:
        if (change == "added") == (record.key in present):
            return False
        (present.add if change != "removed" else present.discard)(record.key)
    return True


def test_flapping_service_ends_in_a_consistent_state(browse, raw_zc, service_type):
    browser, got = browse()
    for i in range(8):
        info = _raw_info(
            service_type,
            "flap",
            {"id": "wf", "pv": "1", "fp": FP, "state": "busy" if i % 2 else "idle"},
        )
        raw_zc.register_service(info, cooperating_responders=True)
        if i < 7:
            raw_zc.unregister_service(info)
    got.wait_until(
        lambda ev: [(p.worker_id, p.state) for p in browser.peers()] == [("wf", "busy")], 15
    )
    assert _well_formed(got.events), [(c, r.state) for c, r in got.events]


def test_rapid_state_updates_settle_on_the_last_one(browse, service_type):
    browser, got = browse()
    with Advertiser(_record("wu"), 5002, interfaces=LO, service_type=service_type) as adv:
        got.wait_until(lambda ev: len(ev) >= 1, 10)
        for i in range(10):
            adv.update(state="busy" if i % 2 == 0 else "idle", memory_bytes=i)
        got.wait_until(
            lambda ev: [(p.state, p.memory_bytes) for p in browser.peers()] == [("idle", 9)], 10
        )
    assert _well_formed(got.events)


def test_manual_peer_is_listed_marked_and_never_expires(browse):
    browser, got = browse()
    record = browser.add_manual("10.0.0.7", 7140)
    assert record.manual and record.address == "10.0.0.7:7140" and record.key == "10.0.0.7:7140"
    got.wait_until(lambda ev: [c for c, _ in ev] == ["added"], 5)
    browser.update_manual("10.0.0.7", 7140, worker_id="wm", chip="M1")
    got.wait_until(lambda ev: ev[-1][0] == "updated" and ev[-1][1].worker_id == "wm", 5)
    time.sleep(2.5)  # two liveness checks: a manual peer has no SRV record and must stay
    assert [p.worker_id for p in browser.peers()] == ["wm"]
    browser.remove_manual("10.0.0.7", 7140)
    got.wait_until(lambda ev: ev[-1][0] == "removed", 5)
    for host, port in (("", 1), ("a b", 1), ("h", 0), ("h", 70000)):
        with pytest.raises(ValueError):
            browser.add_manual(host, port)


def test_a_failing_callback_does_not_stop_discovery(service_type):
    got = Collector()
    calls = []

    def explode(change: str, record: PeerRecord) -> None:
        calls.append(change)
        raise RuntimeError("consumer bug")

    browser = Browser(
        explode,
        on_event=lambda e: got(
            e.change,
            PeerRecord(**{k: v for k, v in e.peer.items() if k in ("worker_id", "service_name")}),
        ),
        service_type=service_type,
        interfaces=LO,
    ).start()
    try:
        with Advertiser(_record("wx"), 5003, interfaces=LO, service_type=service_type) as adv:
            got.wait_until(lambda ev: len(ev) >= 1, 10)
            adv.update(state="busy")
            got.wait_until(lambda ev: len(ev) >= 2, 10)
    finally:
        browser.close()
    assert calls[:2] == ["added", "updated"]
