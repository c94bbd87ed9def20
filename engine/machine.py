"""What this machine and this install are: protocol version, chip, memory, package versions.

The one place both the worker (Describe) and discovery (Bonjour TXT) read these from, so an
advertisement and a Describe reply can never disagree. Cheap: no mlx import, no network.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import subprocess

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "1"  # bump when the orchard.v1 wire protocol changes incompatibly


def package_version(dist: str) -> str:
    """The installed version of ``dist``, or '' when it is not installed as a package."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def chip_name() -> str:
    """'Apple M2 Ultra' on a Mac, the CPU model name on Linux, else the machine type."""
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
    """Physical memory in bytes (0 when the system will not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
