"""On Linux, start worker processes with the system OpenBLAS preloaded.

The mlx CPU wheel ships a reference BLAS; preloading OpenBLAS made a LoRA step ~9x faster
here (docs: DESIGN.md, Platforms). Controlled by ORCHARD_OPENBLAS: "auto" (default: use it
when present), "off", or a path to the library. Never on macOS (MLX uses Metal/Accelerate).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

OPENBLAS_ENV = "ORCHARD_OPENBLAS"
CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
)


def find_openblas(setting: str) -> str | None:
    """The library to preload for this setting, or None."""
    if not sys.platform.startswith("linux") or setting.lower() in ("off", "0", "no", "false"):
        return None
    if setting.lower() not in ("", "auto", "on", "1", "yes", "true"):
        return setting if Path(setting).is_file() else None
    return next((c for c in CANDIDATES if Path(c).is_file()), None)


def worker_env(base: Mapping[str, str], workers_on_host: int = 1) -> dict[str, str]:
    """The environment for a local worker process: OpenBLAS preloaded, threads shared out.

    Each worker gets cpu_count // workers_on_host BLAS threads so N workers do not
    oversubscribe the cores (an explicit OPENBLAS_NUM_THREADS wins).
    """
    env = dict(base)
    lib = find_openblas(env.get(OPENBLAS_ENV, "auto"))
    if lib is None:
        if sys.platform.startswith("linux"):
            log.info(
                "OpenBLAS preload: off (setting %r, library not found or disabled)",
                env.get(OPENBLAS_ENV, "auto"),
            )
        return env
    preload = env.get("LD_PRELOAD", "")
    if lib not in preload.split(":"):
        env["LD_PRELOAD"] = f"{lib}:{preload}" if preload else lib
    threads = max(1, (os.cpu_count() or 1) // max(1, workers_on_host))
    env.setdefault("OPENBLAS_NUM_THREADS", str(threads))
    log.info("OpenBLAS preload: %s with %s threads per worker", lib, env["OPENBLAS_NUM_THREADS"])
    return env


def openblas_loaded() -> bool:
    """Whether this process has OpenBLAS mapped (for the worker's startup log line)."""
    try:
        return "libopenblas" in Path("/proc/self/maps").read_text()
    except OSError:
        return False
