"""kill -9 of the engine (coordinator) mid-run: no worker survives it, and a relaunch with
resume continues from the last checkpoint, repeating the killed run's losses exactly."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.runtime import start_run
from engine.train.checkpoint import load_latest_checkpoint
from tests.runtime.helpers import tiny_job, train_losses
from tests.worker.test_lifeline import alive, wait_gone

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("coordinator_script.py")
STEPS, EVERY, KILL_AFTER = 7, 3, 4  # checkpoint at 3; killed after step 4, before 5


class Lines:
    """The engine's stdout, line by line, each wait bounded by a deadline."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.buf, self.lines = proc, b"", []

    def until(self, accept, deadline: float) -> str:
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                self.lines.append(raw.decode())
                if accept(self.lines[-1]):
                    return self.lines[-1]
            if select.select([fd], [], [], 0.5)[0]:
                piece = os.read(fd, 4096)
                assert piece, f"engine exited ({self.proc.poll()}); printed {self.lines[-5:]}"
                self.buf += piece
        raise AssertionError(f"deadline passed; the engine printed {self.lines[-5:]}")


def _workers_of(engine_pid: int) -> list[int]:
    """Live processes started for ``engine_pid`` (ORCHARD_PARENT_PID in /proc/<pid>/environ)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"ORCHARD_PARENT_PID={engine_pid}".encode() in env and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _job(out: Path):
    over = {"dist.workers": 2, "run.checkpoint_every": EVERY, "run.keep_checkpoints": 3,
            "run.name": "killed"}  # fmt: skip
    return tiny_job(out, steps=STEPS, **over)


@pytest.mark.timeout(400)
def test_kill_9_of_the_coordinator_leaves_no_worker_and_a_relaunch_resumes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out, cache = tmp_path / "runs", tmp_path / "cache"
    cmd = [
        sys.executable,
        str(SCRIPT),
        str(out),
        str(cache),
        str(STEPS),
        str(EVERY),
        str(KILL_AFTER),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, cwd=ROOT)
    lines = Lines(proc)
    try:
        line = lines.until(lambda s: s.startswith("WORKERS="), time.monotonic() + 240)
        pids = [int(p) for p in line[len("WORKERS=") :].split(",")]
        assert sorted(pids) == sorted(_workers_of(proc.pid))
        lines.until(lambda s: s.startswith(f"STEP={KILL_AFTER} "), time.monotonic() + 240)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert wait_gone(pids, 20) == [], "workers outlived a kill -9 of their coordinator"
    assert _workers_of(proc.pid) == []
    before_kill = {
        int(s.split()[0][5:]): float(s.split()[1][5:]) for s in lines.lines if s.startswith("STEP=")
    }

    (run_dir,) = out.iterdir()
    saved = load_latest_checkpoint(run_dir).step
    assert saved == EVERY, saved
    again = start_run(_job(out), data_dir=cache, resume_from=run_dir).wait(300)
    assert again is not None and again.status == "finished" and again.step == STEPS, again
    resumed = train_losses(run_dir)
    assert len(resumed) == STEPS
    redone = [s for s in before_kill if s > saved]
    assert redone == [KILL_AFTER], before_kill
    np.testing.assert_allclose(
        [resumed[s - 1] for s in redone], [before_kill[s] for s in redone], rtol=1e-5
    )
