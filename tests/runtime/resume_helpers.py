"""Pieces of the per-mode resume tests: a reusable worker pool, a sink that stops a run
after a given step (the real Stop path), and readers for the metrics a resume must repeat."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.config import JobSpec
from engine.events import MetricEvent, StateEvent
from engine.rpc.auth import TOKEN_ENV, new_token
from engine.runtime import start_run
from engine.runtime.coordinator import RunResult
from engine.runtime.local_workers import start_local_worker, stop_local_workers
from engine.train.metrics import read_metrics

RUN_WAIT_S = 240.0  # one short run on the shared 2-core machine takes 2-20 s


@contextmanager
def worker_pool(root: Path, n: int) -> Iterator[list[str]]:
    """``n`` worker processes reached as ``dist.hosts``, shared by many runs (each run is
    a fresh job in a fresh child process on the worker, so even "mlx" can reuse them)."""
    token = new_token()
    workers = [start_local_worker(token, root / "pool", root / f"pool{r}.log", n) for r in range(n)]
    old = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = token
    try:
        yield [w.address for w in workers]
    finally:
        if old is None:
            os.environ.pop(TOKEN_ENV, None)
        else:
            os.environ[TOKEN_ENV] = old
        stop_local_workers(workers, grace_s=10)


@dataclass
class Outcome:
    result: RunResult
    steps: list[int] = field(default_factory=list)  # the train steps this run computed
    start_step: int | None = None  # from the "running" StateEvent


def run(
    job: JobSpec, data_dir: Path, stop_after: int | None = None, resume_from: Path | None = None
) -> Outcome:
    """Run ``job`` to its end, or press Stop as soon as step ``stop_after`` is reported.

    The sink runs on the coordinator's thread right after the step's metrics, so the stop
    event is seen at the next step boundary: the run stops after exactly that step."""
    stop = threading.Event()
    steps: list[int] = []
    starts: list[int] = []

    def sink(event: object) -> None:
        if isinstance(event, MetricEvent) and event.kind == "train":
            steps.append(event.step)
            if stop_after is not None and event.step >= stop_after:
                stop.set()
        elif isinstance(event, StateEvent) and event.state == "running":
            starts.append(int(event.detail.get("start_step", -1)))

    handle = start_run(job, sink, stop, resume_from=resume_from, data_dir=data_dir)
    result = handle.wait(RUN_WAIT_S)
    assert result is not None, f"run {job.run.name!r} did not end within {RUN_WAIT_S:.0f} s"
    return Outcome(result, steps, starts[0] if starts else None)


def train_column(run_dir: Path, name: str) -> np.ndarray:
    """One value of every train row of metrics.jsonl, in step order (rows are 1..N)."""
    rows = sorted(
        (
            r
            for r in read_metrics(Path(run_dir) / "metrics.jsonl")
            if r.get("kind", "train") == "train"
        ),
        key=lambda r: r["step"],
    )
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1)), "steps missing or repeated"
    return np.array([r[name] for r in rows], np.float64)


def max_rel_diff(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, f"{got.shape} != {want.shape}"
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-12)))
