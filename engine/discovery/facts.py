"""What this machine is (host, chip, memory, versions, addresses), for its advertisement.

Read cheaply and without importing mlx (a worker advertises before it loads anything).
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
import logging
import os
import platform
import socket
import subprocess

import ifaddr

log = logging.getLogger(__name__)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def chip_name() -> str:
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=2,
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            log.debug("sysctl failed: %s", e)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def host_facts() -> dict[str, object]:
    """Fields for a PeerRecord describing this machine (everything but id, port, fingerprint)."""
    return {
        "host": socket.gethostname(),
        "chip": chip_name(),
        "memory_bytes": memory_bytes(),
        "mlx_version": _version("mlx"),
        "orchard_version": _version("orchard"),
    }


def local_ipv4_addresses(include_loopback: bool = False) -> list[str]:
    """This machine's IPv4 addresses, loopback only when asked (or when it is all there is)."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ip.is_IPv4 and isinstance(ip.ip, str):
                if include_loopback or not ipaddress.IPv4Address(ip.ip).is_loopback:
                    found.append(ip.ip)
    return found or (["127.0.0.1"] if not include_loopback else [])
