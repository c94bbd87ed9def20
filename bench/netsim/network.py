"""SimNetwork: N nodes (network namespaces) on one bridge, each behind its own shaped link.

    hub namespace:  bridge <- veth v<i> (tc tbf: the node's download rate)
    node i:         veth e<i>, 10.a.b.(i+1) (tc tbf: its upload rate; iptables NFQUEUE on
                    INPUT and OUTPUT -> nfdelay: delay, jitter, loss)

A node's link adds rtt/4 in each direction of each crossing, so two nodes on the same profile
see its full RTT between them (A's output + B's input one way, and back). Rate limits both
directions, like a full-duplex port. ``CpuLimit`` holds processes to a share of the CPU with
a cgroup v1 quota. Both are context managers that remove everything they made, also when
building it failed half way.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.netsim.profiles import LinkProfile
from bench.netsim.system import (
    CGROUP_CPU,
    PREFIX,
    HarnessError,
    nfdelay_binary,
    remove_cgroup,
    require,
    sh,
)

log = logging.getLogger(__name__)
QUEUE = 0  # NFQUEUE numbers are per namespace: every node uses queue 0
# tbf counts whole frames; a profile's rate is TCP goodput: 1448 payload bytes (MSS with
# timestamps) travel in a 1514-byte Ethernet frame
FRAME_OVERHEAD = 1514 / 1448
CONGESTION_CONTROL = "cubic"  # macOS's TCP congestion control
# Round trip the emulator itself adds: four user-space hops through nfdelay, each woken by a
# timer (~0.2 ms in all with timed holds, ~0.05 ms without). Taken off the asked delay, so
# 1 GbE measured 0.17-0.2 ms and Wi-Fi 2.8-3.0 ms here; links below it get the floor
EMULATOR_FLOOR_MS = 0.12
ALLOWED_CC = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")


@dataclass
class Node:
    index: int
    ns: str
    dev: str  # the node's end of its cable
    hub_dev: str  # the hub's end (the bridge port)
    ip: str
    profile: LinkProfile
    delay: subprocess.Popen | None = field(default=None, repr=False)


class SimNetwork:
    def __init__(self, profiles: list[LinkProfile], seed: int = 0):
        self.tag = f"{os.getpid() % 10000}{random.randint(0, 999):03d}"
        self.hub = f"{PREFIX}H{self.tag}"
        self.net = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
        self.seed = seed
        self._profiles = list(profiles)
        self.nodes: list[Node] = []
        self._made: list[str] = []  # namespaces, deleted in reverse
        self._restore_cc: str | None = None  # the host's allowed list before we added cubic

    def __enter__(self) -> SimNetwork:
        require()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        binary = nfdelay_binary()
        allowed = ALLOWED_CC.read_text().split()
        if CONGESTION_CONTROL not in allowed:  # a namespace may only pick an allowed one
            ALLOWED_CC.write_text(" ".join([*allowed, CONGESTION_CONTROL]))
            self._restore_cc = " ".join(allowed)
        self._netns(self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i, profile in enumerate(self._profiles):
            node = Node(
                i, f"{PREFIX}N{self.tag}{i}", f"e{i}", f"v{i}", f"{self.net}.{i + 1}", profile
            )
            self._netns(node.ns)
            self.nodes.append(node)
            sh("ip", "-n", self.hub, "link", "add", node.hub_dev, "type", "veth", "peer", "name",
               node.dev, "netns", node.ns)  # fmt: skip
            sh("ip", "-n", self.hub, "link", "set", node.hub_dev, "master", "br0", "up")
            sh("ip", "-n", node.ns, "link", "set", "lo", "up")
            # macOS sends with CUBIC; this host's default (BBR here) reads jitter as lost
            # bandwidth and ran a 150 Mbit link with +-3 ms jitter at 30 Mbit/s
            sh("sysctl", "-qw", f"net.ipv4.tcp_congestion_control={CONGESTION_CONTROL}", ns=node.ns)
            sh("ip", "-n", node.ns, "addr", "add", f"{node.ip}/24", "dev", node.dev)
            sh("ip", "-n", node.ns, "link", "set", node.dev, "up")
            for chain, flag in (("OUTPUT", "-o"), ("INPUT", "-i")):
                sh("iptables-legacy", "-A", chain, flag, node.dev, "-j", "NFQUEUE",
                   "--queue-num", str(QUEUE), ns=node.ns)  # fmt: skip
            self._shape(node, profile, binary, replace=False)

    def _netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self._made.append(name)

    def _shape(self, node: Node, profile: LinkProfile, binary: Path, replace: bool) -> None:
        rate = profile.rate_bytes_s * FRAME_OVERHEAD
        burst = int(max(32 * 1024, rate * 0.5e-3))  # 0.5 ms of line rate
        limit = int(max(256 * 1024, rate * 10e-3))  # 10 ms of queue before tail drop
        verb = "replace" if replace else "add"
        for ns, dev in ((node.ns, node.dev), (self.hub, node.hub_dev)):
            sh("tc", "-n", ns, "qdisc", verb, "dev", dev, "root", "tbf", "rate",
               f"{int(rate * 8)}bit", "burst", str(burst), "limit", str(limit))  # fmt: skip
        self._stop_delay(node)
        # one crossing of this link: a quarter of the RTT (see the module docstring)
        args = [str(binary), str(QUEUE), f"{max(0.0, profile.rtt_ms - EMULATOR_FLOOR_MS) * 250:.1f}", f"{profile.jitter_ms * 500:.1f}",
                f"{profile.loss / 2:.8f}", str(self.seed * 100 + node.index)]  # fmt: skip
        proc = subprocess.Popen(
            ["ip", "netns", "exec", node.ns, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        node.delay = proc
        line = proc.stdout.readline().strip() if proc.stdout else ""
        if line != "ready":
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
            raise HarnessError(f"nfdelay in {node.ns} did not start: {line!r} {err.strip()}")
        node.profile = profile

    def reshape(self, index: int, profile: LinkProfile) -> None:
        """Give node ``index`` another link profile (rate, delay, jitter, loss) in place."""
        self._shape(self.nodes[index], profile, nfdelay_binary(), replace=True)

    def _stop_delay(self, node: Node) -> None:
        proc, node.delay = node.delay, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # nfdelay releases what it holds, then exits
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def close(self) -> None:
        """Stop every nfdelay, then delete the namespaces (their links, qdiscs and iptables
        rules go with them). Best effort: one failure does not keep the rest."""
        for node in self.nodes:
            try:
                self._stop_delay(node)
            except Exception:  # noqa: BLE001 - cleanup goes on
                log.warning("could not stop nfdelay in %s", node.ns, exc_info=True)
        for name in reversed(self._made):
            sh("ip", "netns", "del", name, check=False)
        self._made.clear()
        if self._restore_cc is not None:
            ALLOWED_CC.write_text(self._restore_cc)
            self._restore_cc = None


class CpuLimit:
    """A cgroup v1 cpu group holding its processes to ``cores`` CPUs' worth of time."""

    PERIOD_US = 100_000

    def __init__(self, cores: float):
        if not cores > 0:
            raise ValueError(f"cores: expected > 0, got {cores}")
        self.cores = cores
        self.path = CGROUP_CPU / f"{PREFIX}C{os.getpid() % 10000}{random.randint(0, 99999):05d}"

    def __enter__(self) -> CpuLimit:
        require()
        self.path.mkdir()
        try:
            (self.path / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(int(self.cores * self.PERIOD_US)))
        except BaseException:
            remove_cgroup(self.path)
            raise
        return self

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def __exit__(self, *exc: object) -> None:
        remove_cgroup(self.path)
