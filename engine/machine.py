"""What this machine and this install are: protocol version, chip, memory, package versions.

The one place both the worker (Describe) and discovery (Bonjour TXT) read these from, so an
advertisement and a Describe reply can never disagree. Cheap: no mlx import, no network.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import re
import subprocess

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "2"  # bump when the orchard.v1 wire protocol changes incompatibly
# 2: StepRequest.shares splits the batch unevenly (a worker of 1 would ignore it: wrong batches)

# How much of a machine's memory training may plan on (macOS and other apps need the rest).
# The preflight offers only fixes under FIT_SHARE and refuses a run over REFUSE_SHARE; each
# worker's memory guard ends a step past REFUSE_SHARE of its part of the machine.
FIT_SHARE = 0.75
REFUSE_SHARE = 0.9


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


def _meminfo_available() -> int:
    """Linux: MemAvailable from /proc/meminfo (what can be allocated without swapping)."""
    with open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file says kB and means KiB
    return 0


def parse_vm_stat(text: str) -> int:
    """macOS: free + inactive + speculative pages from ``vm_stat`` output (the pages the OS
    hands out without compressing or swapping), times the page size it reports."""
    lines = text.splitlines()
    size = re.search(r"page size of (\d+) bytes", lines[0]) if lines else None
    page = int(size.group(1)) if size else 4096
    pages = 0
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip() in ("Pages free", "Pages inactive", "Pages speculative"):
            pages += int(value.strip().rstrip("."))
    return pages * page


def _vm_stat_available() -> int:
    out = subprocess.run(["vm_stat"], capture_output=True, text=True, timeout=2)
    return parse_vm_stat(out.stdout) if out.returncode == 0 else 0


def free_memory_bytes() -> int:
    """Memory available to a new job right now, in bytes (0 when the system will not say)."""
    try:
        free = _vm_stat_available() if platform.system() == "Darwin" else _meminfo_available()
    except (OSError, ValueError, AttributeError, subprocess.SubprocessError) as e:
        log.debug("free memory unknown: %s", e)
        return 0
    total = memory_bytes()
    return min(free, total) if total else free
