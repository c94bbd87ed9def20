"""The run folder: runs/<name>/{job.toml, metrics.jsonl, log.txt, checkpoints/, adapter/}.

One layout for the engine's runs and the one-process trainer's, so the app and the CLI
read both the same way.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from engine.config import JobSpec

JOB_FILE = "job.toml"
LOG_FILE = "log.txt"
ADAPTER_DIR = "adapter"


def new_run_dir(job: JobSpec) -> Path:
    """Create ``run.out_dir/run.name`` (a dated name when empty; ``-2``, ``-3``... when taken).
    The mkdir itself claims the name, so two runs started at once never share a folder.
    ``run.out_dir`` becomes an absolute path (saved so in job.toml): whoever reads the run
    folder later, from whatever current folder, finds the same files."""
    root = Path(job.run.out_dir).expanduser().resolve()
    job.run.out_dir = str(root)
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
