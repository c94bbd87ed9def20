"""Local workers started ahead of their run (engine/runtime/warm_workers.py): real worker
processes, real runs. The run takes them when they fit its settings, ends them otherwise,
and a refused run leaves no process and no folder behind."""

from __future__ import annotations

import re
from pathlib import Path

from engine.runtime import start_run
from engine.runtime.warm_workers import WarmWorkers
from tests.runtime.helpers import tiny_job

PID = re.compile(r"local worker pid (\d+) on ")


def _pids(warm: WarmWorkers) -> list[int]:
    return [proc.pid for proc, _ in warm._pending]


def _procs(warm: WarmWorkers) -> list:
    return [proc for proc, _ in warm._pending]


def test_a_run_takes_the_workers_started_ahead_and_their_logs(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    job = tiny_job(out, steps=2, **{"dist.workers": 2})
    warm = WarmWorkers.spawn(job)
    assert warm is not None and out.is_dir()
    started = _pids(warm)
    result = start_run(job, warm=warm).wait(timeout=300)
    assert result is not None and result.status == "finished", result
    log = (result.run_dir / "log.txt").read_text()
    assert sorted(int(p) for p in PID.findall(log)) == sorted(started)  # no other process
    for i in range(2):  # each worker's own log, from its first line, in the run folder
        text = (result.run_dir / "workers" / f"worker{i}.log").read_text()
        assert "gRPC server listening" in text and "job " in text and "set up" in text
    assert [p.name for p in out.iterdir()] == [result.run_dir.name]  # no hidden folder left
    warm.close()  # the run's own now: nothing left to end, nothing raised


def test_workers_that_do_not_fit_the_run_are_ended_and_it_starts_its_own(tmp_path: Path) -> None:
    job = tiny_job(tmp_path / "runs", steps=2, **{"dist.workers": 1})
    warm = WarmWorkers.spawn(tiny_job(tmp_path / "runs", **{"dist.workers": 2}))
    assert warm is not None
    procs, started = _procs(warm), _pids(warm)
    result = start_run(job, warm=warm).wait(timeout=300)
    assert result is not None and result.status == "finished", result
    assert all(p.poll() is not None for p in procs)  # ended, not left idle
    used = [int(p) for p in PID.findall((result.run_dir / "log.txt").read_text())]
    assert len(used) == 1 and used[0] not in started


def test_closing_unused_workers_ends_them_and_removes_what_they_made(tmp_path: Path) -> None:
    out = tmp_path / "not" / "yet"
    warm = WarmWorkers.spawn(tiny_job(out, **{"dist.workers": 2}))
    assert warm is not None and out.is_dir()
    procs = _procs(warm)
    warm.close()
    assert all(p.poll() is not None for p in procs)
    assert not out.exists() and (tmp_path / "not").is_dir()  # only what it made goes
    warm.close()  # idempotent


def test_a_job_on_remote_hosts_starts_nothing_ahead(tmp_path: Path) -> None:
    job = tiny_job(tmp_path / "runs", **{"dist.hosts": ["studio.local:50051"]})
    assert WarmWorkers.spawn(job) is None and not (tmp_path / "runs").exists()


def test_a_folder_left_by_a_killed_command_is_cleared_by_the_next(tmp_path: Path) -> None:
    import os
    import time

    from engine.runtime.warm_workers import PREFIX, STALE_S

    out = tmp_path / "runs"
    stale, fresh = out / f"{PREFIX}old", out / f"{PREFIX}new"  # fresh: a command starting now
    for d in (stale, fresh):
        d.mkdir(parents=True)
        (d / "worker0.log").write_text("started\n")
    old = time.time() - STALE_S - 60
    os.utime(stale, (old, old))
    warm = WarmWorkers.spawn(tiny_job(out, **{"dist.workers": 1}))
    assert warm is not None
    warm.close()
    assert not stale.exists() and fresh.is_dir()
