"""`orchard discover`: the table, and the real command inside a network namespace."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine.cli.discover import format_table, store_verdict
from engine.discovery import PROTOCOL_VERSION, PeerRecord
from engine.trust import PeerStore, new_peer
from tests.discovery.conftest import ROOT

FP, OTHER = "ab" * 32, "cd" * 32


def test_table_shows_each_peer_with_pairing_and_problems(tmp_path):
    store = PeerStore(tmp_path / "workers.json")
    store.put(new_peer("w1", FP, b"s" * 32))
    peers = [
        PeerRecord(
            worker_id="w1",
            host="studio",
            addresses=("10.0.0.2",),
            port=7140,
            chip="M2 Ultra",
            memory_bytes=192 << 30,
            fingerprint=FP,
        ),
        PeerRecord(
            worker_id="w1",
            host="evil",
            addresses=("10.0.0.9",),
            port=7140,
            fingerprint=OTHER,
            service_name="evil._orchard._tcp.local.",
        ),
        PeerRecord(
            worker_id="w3",
            host="mini",
            addresses=("10.0.0.3",),
            port=7140,
            state="busy",
            protocol="9",
            fingerprint=OTHER,
        ),
        PeerRecord(host="10.0.0.4", port=7140, protocol="", manual=True),
        PeerRecord(
            service_name="bad._orchard._tcp.local.", valid=False, problem="TXT has no 'id' item"
        ),
    ]
    lines = format_table(peers, store_verdict(store)).splitlines()
    assert lines[0].split() == ["id", "host", "address", "chip", "memory", "state", "paired"]
    assert lines[1].split() == [
        "w1",
        "studio",
        "10.0.0.2:7140",
        "M2",
        "Ultra",
        "192",
        "GB",
        "idle",
        "yes",
    ]
    assert lines[2].endswith("MISMATCH")
    assert f"protocol 9 (need {PROTOCOL_VERSION})" in lines[3]
    assert "idle (manual)" in lines[4]
    assert "invalid: TXT has no 'id' item" in lines[5]
    assert "no Orchard workers found" in format_table([], store_verdict(None))


@pytest.mark.netns
@pytest.mark.slow
def test_discover_command_lists_a_worker_on_another_namespace(netns_pair, peer_processes, tmp_path):
    adv = peer_processes(
        [
            "advertise",
            "--id",
            "wcli",
            "--port",
            "7140",
            "--fp",
            FP,
            "--service-type",
            "_orchard._tcp.local.",
        ],
        netns=netns_pair.a,
    )
    adv.wait_for(lambda line: line == "ready", 20)
    PeerStore(tmp_path / "trust" / "workers.json").put(new_peer("wcli", FP, b"s" * 32))
    code = "import sys; from engine.cli.discover import discover_main; sys.exit(discover_main(timeout_s=2.0))"
    done = subprocess.run(
        ["ip", "netns", "exec", netns_pair.b, sys.executable, "-c", code],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "ORCHARD_HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("wcli"))
    assert f"{netns_pair.addr_a}:7140" in row and "192 GB" in row and row.endswith("yes")
