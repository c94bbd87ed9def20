"""The link harness: a shaped link measures what its profile asks, a CPU quota holds a
process down, and nothing (namespace, link, qdisc, rule, cgroup, process) outlives it,
also when a test fails inside it or building it fails half way."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.netsim.linkcheck import measure_link
from bench.netsim.network import CpuLimit, SimNetwork
from bench.netsim.profiles import PROFILES
from bench.netsim.system import HarnessError, leftovers, netns_names

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.timeout(180)]


@pytest.mark.parametrize("name", ["1gbe", "wifi-congested"])
def test_a_shaped_link_measures_within_tolerance_of_its_profile(name):
    profile = PROFILES[name]
    with SimNetwork([profile, profile]) as net:
        got = measure_link(net, 0, 1, nbytes=int(profile.rate_bytes_s * 0.8))
    # goodput: Wi-Fi's jitter and loss cost TCP some of it, as on a real link
    assert 0.7 * profile.rate_mbit <= got.rate_mbit <= 1.05 * profile.rate_mbit, got
    # rtt: never below the profile's; above it by at most the machine's own floor (a Python
    # ping-pong through two veths and the NFQUEUE emulator: 0.1-0.2 ms here, up to 0.35 ms on
    # a loaded 2-core CI runner), which only matters for sub-millisecond profiles
    assert (
        0.75 * profile.rtt_ms <= got.rtt_ms <= profile.rtt_ms + max(0.35, 0.25 * profile.rtt_ms)
    ), got


def test_nothing_is_left_after_a_failure_inside(tmp_path):
    made = []
    with pytest.raises(RuntimeError, match="boom"):
        with SimNetwork([PROFILES["1gbe"]] * 2) as net:
            made = [n.ns for n in net.nodes] + [net.hub]
            assert set(made) <= set(netns_names())
            raise RuntimeError("boom")
    assert not set(made) & set(netns_names())
    assert not [x for x in leftovers() if any(m in x for m in made)]


def test_nothing_is_left_when_building_fails_half_way(monkeypatch):
    import bench.netsim.network as network

    real = network.sh

    def failing(*argv, **kw):  # the second node's rate limit fails, after everything else
        if "tbf" in argv and any(a.endswith("v1") or a == "e1" for a in argv):
            raise HarnessError("tc: simulated failure")
        return real(*argv, **kw)

    monkeypatch.setattr(network, "sh", failing)
    with pytest.raises(HarnessError, match="simulated"):
        with SimNetwork([PROFILES["1gbe"], PROFILES["1gbe"]]):
            pass


def test_a_cpu_quota_holds_a_busy_process_to_its_share():
    busy = [sys.executable, "-c", "while True: pass"]
    proc = subprocess.Popen(busy)
    try:
        with CpuLimit(0.25) as cpu:
            cpu.add(proc.pid)
            t0, c0 = time.monotonic(), _cpu_s(proc.pid)
            time.sleep(1.5)
            share = (_cpu_s(proc.pid) - c0) / (time.monotonic() - t0)
            assert 0.1 < share < 0.35, share
    finally:
        proc.kill()
        proc.wait()


def _cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
