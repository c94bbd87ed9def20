"""Fixtures for discovery tests: a unique service type per test (so parallel runs and other
tests never see each other) and a pair of network namespaces joined by a veth cable."""

from __future__ import annotations

import os
import queue
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def service_type() -> str:
    return f"_orch{uuid.uuid4().hex[:8]}._tcp.local."


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


@dataclass
class NetnsPair:
    a: str
    b: str
    addr_a: str
    addr_b: str
    veth_a: str
    veth_b: str

    def link(self, side: str, up: bool) -> None:
        """Plug or unplug one end of the cable (a network outage without a goodbye)."""
        ns, dev = (self.a, self.veth_a) if side == "a" else (self.b, self.veth_b)
        done = _ip("-n", ns, "link", "set", dev, "up" if up else "down")
        assert done.returncode == 0, done.stderr
        if up:  # link down drops the multicast route; a real OS restores it on reconnect
            done = _ip("-n", ns, "route", "replace", "224.0.0.0/4", "dev", dev)
            assert done.returncode == 0, done.stderr


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    """Two namespaces, a veth cable between them, 10.x.y.1 and .2 in a private /24."""
    if shutil.which("ip") is None:
        pytest.skip("`ip` (iproute2) is not installed: apt-get install iproute2")
    if os.geteuid() != 0:
        pytest.skip("network-namespace tests need root (ip netns add)")
    tag = f"{os.getpid() % 100000}{random.randint(0, 99)}"
    ns_a, ns_b = f"orchA{tag}", f"orchB{tag}"
    veth_a, veth_b = f"ova{tag}"[:15], f"ovb{tag}"[:15]
    net = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
    made: list[str] = []
    try:
        probe = _ip("netns", "add", ns_a)
        if probe.returncode != 0:
            pytest.skip(f"ip netns add is not permitted here: {probe.stderr.strip()}")
        made.append(ns_a)
        steps = [
            ("netns", "add", ns_b),
            (
                "link",
                "add",
                veth_a,
                "netns",
                ns_a,
                "type",
                "veth",
                "peer",
                "name",
                veth_b,
                "netns",
                ns_b,
            ),
        ]
        for ns, dev, host in ((ns_a, veth_a, 1), (ns_b, veth_b, 2)):
            steps += [
                ("-n", ns, "link", "set", "lo", "up"),
                ("-n", ns, "addr", "add", f"{net}.{host}/24", "dev", dev),
                ("-n", ns, "link", "set", dev, "up", "multicast", "on"),
                ("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev),
            ]
        for step in steps:
            done = _ip(*step)
            if step[:2] == ("netns", "add"):
                made.append(step[2])
            if done.returncode != 0:
                pytest.skip(
                    f"could not build the test network (ip {' '.join(step)}): {done.stderr.strip()}"
                )
        yield NetnsPair(ns_a, ns_b, f"{net}.1", f"{net}.2", veth_a, veth_b)
    finally:
        for ns in made:
            _ip("netns", "del", ns)  # deleting a namespace also deletes its end of the veth


class PeerProcess:
    """A tests.discovery.peer_proc subprocess whose stdout lines are read with deadlines."""

    def __init__(self, argv: list[str], netns: str | None = None):
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "tests.discovery.peer_proc", *argv],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, match: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            seen.append(line)
            if match(line):
                return line
        err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
        raise AssertionError(
            f"no matching line within {timeout} s; saw {seen[-5:]}; stderr: {err[-800:]}"
        )

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def peer_processes() -> Iterator[Callable[..., PeerProcess]]:
    started: list[PeerProcess] = []

    def start(argv: list[str], netns: str | None = None) -> PeerProcess:
        p = PeerProcess(argv, netns)
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()
