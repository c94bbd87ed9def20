"""Cut the veth cable between two test namespaces so packets vanish with no reset.

The preferred cut replaces the root qdisc of both cable ends with ``blackhole``: every
outgoing packet is dropped while the link stays up, so no carrier change, no neighbour flush
and no ICMP tells either side anything (like Wi-Fi that goes out of range). Kernels without
sch_blackhole get ``ip link set down`` on both ends instead, which is silent for established
TCP connections too (retransmissions simply go nowhere).
"""

from __future__ import annotations

import subprocess

from tests.discovery.conftest import NetnsPair


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=20)


def blackhole_available(pair: NetnsPair) -> bool:
    """Can this kernel drop every packet on a device with a qdisc (tried on the cable itself)?"""
    ok = _run("tc", "-n", pair.a, "qdisc", "replace", "dev", pair.veth_a, "root", "blackhole")
    if ok.returncode != 0:
        return False
    _run("tc", "-n", pair.a, "qdisc", "del", "dev", pair.veth_a, "root")
    return True


def cut(pair: NetnsPair, how: str) -> None:
    """``how``: "blackhole" (qdisc drop, link up) or "down" (both ends set down)."""
    for ns, dev in ((pair.a, pair.veth_a), (pair.b, pair.veth_b)):
        if how == "blackhole":
            done = _run("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "blackhole")
        else:
            done = _run("ip", "-n", ns, "link", "set", dev, "down")
        assert done.returncode == 0, f"cutting {dev} in {ns} ({how}): {done.stderr}"
