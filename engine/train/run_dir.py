"""The run folder: runs/<name>/{job.toml, metrics.jsonl, log.txt, checkpoints/, adapter/}."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from engine.config import JobSpec

JOB_FILE = "job.toml"
LOG_FILE = "log.txt"
ADAPTER_DIR = "adapter"


def new_run_dir(job: JobSpec) -> Path:
    """Create ``out_dir/name`` (a dated name when empty); never reuse a folder that has a run."""
    base = Path(job.run.out_dir) / (job.run.name or time.strftime("run-%Y%m%d-%H%M%S"))
    path, n = base, 1
    while (path / JOB_FILE).exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True, exist_ok=True)
    job.save(path / JOB_FILE)
    return path


def attach_log_file(run_dir: Path) -> logging.Handler:
    """Send the engine's log records to run_dir/log.txt (detach with :func:`detach_log_file`)."""
    handler = logging.FileHandler(run_dir / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("engine")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def detach_log_file(handler: logging.Handler) -> None:
    logging.getLogger("engine").removeHandler(handler)
    handler.close()
