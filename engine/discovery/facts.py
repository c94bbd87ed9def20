"""What this machine is (host, chip, memory, versions, addresses), for its advertisement.

Read cheaply and without importing mlx (a worker advertises before it loads anything).
"""

from __future__ import annotations

import ipaddress
import logging
import socket

import ifaddr

from engine.machine import chip_name, memory_bytes, package_version

log = logging.getLogger(__name__)


def host_facts() -> dict[str, object]:
    """Fields for a PeerRecord describing this machine (everything but id, port, fingerprint)."""
    return {
        "host": socket.gethostname(),
        "chip": chip_name(),
        "memory_bytes": memory_bytes(),
        "mlx_version": package_version("mlx"),
        "orchard_version": package_version("orchard"),
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
