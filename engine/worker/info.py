"""What a worker says about itself (Describe; the Bonjour TXT is built from the same dict)."""

from __future__ import annotations

import platform
import socket
import uuid
from typing import Any

from engine.machine import PROTOCOL_VERSION, chip_name, memory_bytes, package_version

__all__ = ["PROTOCOL_VERSION", "worker_info"]


def worker_info(worker_id: str | None = None) -> dict[str, Any]:
    """Describe fields except ``busy`` (the runner knows that)."""
    return {
        "worker_id": worker_id or uuid.uuid4().hex[:12],
        "protocol_version": PROTOCOL_VERSION,
        "hostname": socket.gethostname(),
        "chip": chip_name(),
        "memory_bytes": memory_bytes(),
        "mlx_version": package_version("mlx") or "unknown",
        "orchard_version": package_version("orchard") or "unknown",
        "platform": f"{platform.system()}-{platform.machine()}",
    }
