"""The run folder: create it, keep job.toml in it, and copy the engine's log into log.txt.

Same layout as a single-process run (docs/architecture.md, "run folder"), so the app and the
CLI read both the same way.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from engine.config import JobSpec

JOB_FILE = "job.toml"
LOG_FILE = "log.txt"
ADAPTER_DIR = "adapter"


def create_run_dir(job: JobSpec) -> Path:
    """``run.out_dir/run.name`` (a dated name when empty; ``-2``, ``-3``... when taken)."""
    root = Path(job.run.out_dir).expanduser()
    base = job.run.name or time.strftime("run-%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    path, n = root / base, 1
    while True:
        try:
            path.mkdir()
            break
        except FileExistsError:
            n += 1
            path = root / f"{base}-{n}"
    job.save(path / JOB_FILE)
    return path


def attach_run_log(run_dir: Path) -> logging.Handler:
    """Send the engine's log records to ``run_dir/log.txt`` until the handler is removed."""
    handler = logging.FileHandler(run_dir / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("engine")
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return handler


def detach_run_log(handler: logging.Handler) -> None:
    logging.getLogger("engine").removeHandler(handler)
    handler.close()
