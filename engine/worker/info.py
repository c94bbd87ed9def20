"""What a worker says about itself (Describe, and later the Bonjour TXT records)."""

from __future__ import annotations

import os
import platform
import socket
import uuid
from importlib import metadata
from typing import Any

PROTOCOL_VERSION = "1"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def chip_name() -> str:
    if platform.system() == "Darwin":
        return platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def worker_info(worker_id: str | None = None) -> dict[str, Any]:
    """Describe fields except ``busy`` (the runner knows that)."""
    return {
        "worker_id": worker_id or uuid.uuid4().hex[:12],
        "protocol_version": PROTOCOL_VERSION,
        "hostname": socket.gethostname(),
        "chip": chip_name(),
        "memory_bytes": memory_bytes(),
        "mlx_version": _version("mlx"),
        "orchard_version": _version("orchard"),
        "platform": f"{platform.system()}-{platform.machine()}",
    }
