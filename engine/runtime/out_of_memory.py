"""A worker whose memory guard stopped its step (engine/worker/memory_guard.py).

That worker is not lost: every worker would hit the same limit on the same step, and fewer
workers make each one's share of the batch larger. So the run ends failed, with the guard's
own line (read from a local worker's log) and what to change.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from engine.runtime.cluster import Cluster
from engine.worker.memory_guard import MEMORY_EXIT_CODE, TAG, exit_message

ADVICE = ("The step needs more memory than this machine gives a worker: lower the micro-batch "
          "(more gradient accumulation), use QLoRA or adapt fewer layers; the preflight offers "
          "settings that fit.")  # fmt: skip


class WorkerOutOfMemory(RuntimeError):
    """A step went past a worker's memory limit; redoing it would do the same."""


def memory_failure(
    cluster: Cluster | None, errors: Iterable[BaseException | None] = (), settle_s: float = 0.0
) -> str:
    """The message for a worker stopped at its memory limit, or '' when none was.

    ``errors``: each rank's call error (None: no error), in rank order. A local worker that
    could not be reached may still be exiting: its exit code is waited for (up to 1 s).
    ``settle_s``: wait that long for any local worker to show the guard's exit code."""
    if cluster is None:
        return ""
    errors = list(errors)
    for rank, e in enumerate(errors):
        if getattr(e, "unreachable", False) and rank < len(cluster.local):
            try:
                cluster.local[rank].proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
    deadline = time.monotonic() + settle_s
    while settle_s and cluster.local and time.monotonic() < deadline:
        if any(w.proc.poll() == MEMORY_EXIT_CODE for w in cluster.local):
            break
        time.sleep(0.02)
    for rank, w in enumerate(cluster.local):
        if w.proc.poll() == MEMORY_EXIT_CODE:
            where = cluster.addresses[rank] if rank < cluster.size else f"pid {w.pid}"
            return f"worker {where}: {_guard_line(w.log_path) or exit_message()} {ADVICE}"
    for e in errors:  # a network worker's job process: the agent named it in its error
        if e is not None and TAG in str(e):
            return f"{e} {ADVICE}"
    return ""


def check_out_of_memory(cluster: Cluster, errors: Iterable[BaseException | None] = ()) -> None:
    """Raise WorkerOutOfMemory (after ending every job) when a worker's guard stopped it."""
    message = memory_failure(cluster, errors)
    if message:
        cluster.abandon("a worker ran out of memory")
        raise WorkerOutOfMemory(message)


def _guard_line(log_path: Path) -> str:
    """The guard's last line in a local worker's log (what it held, its limit)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16384))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line[line.index(TAG) :] for line in tail.splitlines() if TAG in line]
    return lines[-1].rstrip(".") + "." if lines else ""
