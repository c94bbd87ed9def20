"""Hostfile and environment for MLX's own distributed layer (``mx.distributed``).

The ring backend reads ``MLX_HOSTFILE`` (a JSON list, one entry per rank, each a list of
"ip:port" the rank listens on; rank i connects to its neighbours' entries) and ``MLX_RANK``
(as ``mlx.launch`` writes them, mlx/_distributed_utils/launch.py). JACCL (RDMA over
Thunderbolt 5, macOS 26.2+) instead reads ``MLX_IBV_DEVICES`` and ``MLX_JACCL_COORDINATOR``;
:func:`jaccl_possible` says whether this machine could use it. On Linux only ring works.
"""

from __future__ import annotations

import json
import platform
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` ports free right now (bound then released; a small race is possible)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def write_ring_hostfile(
    path: str | Path, hosts: Sequence[str] | int, base_port: int | None = None
) -> list[list[str]]:
    """Write MLX's ring hostfile for ``hosts`` ("ip" or "ip:port" per rank) or N local ranks.

    Ranks without a port get ``base_port + rank`` (or a port free on this machine, which
    suits only ranks on this machine: a worker holds and reports its own port,
    engine/worker/ring_port.py). The ring backend needs IP addresses, not host names.
    Returns the JSON written.
    """
    if isinstance(hosts, int):
        if hosts < 1:
            raise ValueError(f"write_ring_hostfile: expected >= 1 rank, got {hosts}")
        hosts = ["127.0.0.1"] * hosts
    ports = (
        free_ports(len(hosts)) if base_port is None else [base_port + i for i in range(len(hosts))]
    )
    entries = []
    for rank, host in enumerate(hosts):
        ip, sep, port = host.rpartition(":")
        if not sep:
            ip, port = host, str(ports[rank])
        try:
            socket.inet_aton(ip)
        except OSError:
            raise ValueError(f"write_ring_hostfile: rank {rank}: {ip!r} is not an IPv4 address "
                             "(MLX's ring backend needs IPs)") from None  # fmt: skip
        entries.append([f"{ip}:{int(port)}"])
    Path(path).write_text(json.dumps(entries), encoding="utf-8")
    return entries


def ring_env(hostfile: str | Path, rank: int, verbose: bool = False) -> dict[str, str]:
    """The environment one rank needs before ``mx.distributed.init(backend="ring")``."""
    env = {"MLX_HOSTFILE": str(hostfile), "MLX_RANK": str(rank)}
    if verbose:
        env["MLX_RING_VERBOSE"] = "1"
    return env


def local_ring_envs(folder: str | Path, n: int) -> list[dict[str, str]]:
    """Hostfile in ``folder`` plus one environment per rank for ``n`` local processes."""
    path = Path(folder) / "mlx_hostfile.json"
    write_ring_hostfile(path, n)
    return [ring_env(path, r) for r in range(n)]


def jaccl_possible() -> bool:
    """True on a Mac whose MLX has JACCL and which lists RDMA devices (Thunderbolt 5)."""
    if platform.system() != "Darwin":
        return False
    import mlx.core as mx

    if not mx.distributed.is_available("jaccl"):
        return False
    tool = shutil.which("ibv_devices")
    if tool is None:
        return False
    try:
        out = subprocess.run([tool], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(line.strip().startswith("rdma") for line in out.splitlines())
