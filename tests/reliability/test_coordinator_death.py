"""kill -9 of the engine (coordinator) mid-run: no worker survives it, and a relaunch with
resume continues from the last checkpoint, repeating the killed run's losses exactly."""

from __future__ import annotations

import contextlib
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
from engine.worker.agent import HARD_EXIT_S
from tests.reliability.proc_sockets import unread_from
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
        t_kill = time.monotonic()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    gone = _gone_after(pids, t_kill, 20)
    assert _workers_of(proc.pid) == []
    print(f"\nkill -9 between steps: every worker gone {gone:.2f}s after the kill")
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


def _gone_after(pids: list[int], since: float, limit_s: float) -> float:
    """Seconds from ``since`` until every pid is gone; fails past ``limit_s``."""
    left = wait_gone(pids, limit_s)
    assert left == [], f"workers {left} outlived a kill -9 of their coordinator by {limit_s:.0f}s"
    return time.monotonic() - since


def _freeze_mid_collective(proc: subprocess.Popen, lines: Lines) -> list[int]:
    """Freeze worker 1 once step KILL_AFTER is reported, let the engine start the next step
    and return once worker 0 has pushed its part to worker 1: worker 0 now blocks in the
    collective (its bytes sit unread in the frozen worker's socket). Returns the pids."""
    line = lines.until(lambda s: s.startswith("WORKERS="), time.monotonic() + 240)
    pids = [int(p) for p in line[len("WORKERS=") :].split(",")]
    line = lines.until(lambda s: s.startswith("PORTS="), time.monotonic() + 10)
    port_1 = int(line[len("PORTS=") :].split(",")[1])
    lines.until(lambda s: s.startswith(f"STEP={KILL_AFTER} "), time.monotonic() + 240)
    os.kill(pids[1], signal.SIGSTOP)
    before = unread_from(pids[0], port_1)
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while (sent := unread_from(pids[0], port_1) - before) < 1024:
        assert time.monotonic() < deadline, f"worker 0 sent only {sent} bytes to worker 1"
        time.sleep(0.05)
    return pids


def _rest_of(proc: subprocess.Popen, lines: Lines, limit_s: float = 10) -> list[str]:
    """Every line the (dead) engine printed, up to the end of its stdout."""
    fd, buf, deadline = proc.stdout.fileno(), lines.buf, time.monotonic() + limit_s
    while time.monotonic() < deadline and select.select([fd], [], [], 0.5)[0]:
        if not (piece := os.read(fd, 4096)):
            break
        buf += piece
    return lines.lines + buf.decode().splitlines()


@pytest.mark.timeout(300)
def test_kill_9_while_a_worker_waits_in_a_collective_leaves_no_worker_and_resumes(tmp_path):
    """Worker 1 is frozen (SIGSTOP) and the engine starts step KILL_AFTER + 1: worker 0 sends
    its part and blocks in the collective waiting for worker 1's. Then the engine gets kill -9.
    Worker 0 must end on its own, the frozen one as soon as it runs again, and a relaunch
    redoes the lost steps with the losses the killed run reported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out, cache = tmp_path / "runs", tmp_path / "cache"
    cmd = [sys.executable, str(SCRIPT), str(out), str(cache), str(STEPS), str(EVERY),
           str(KILL_AFTER), "go"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT)
    lines, pids, killed = Lines(proc), [], False
    try:
        pids = _freeze_mid_collective(proc, lines)
        os.kill(proc.pid, signal.SIGKILL)
        t_kill, killed = time.monotonic(), True
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if not killed:  # failed before the kill: let the frozen worker go
            for p in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGCONT)
    printed = _rest_of(proc, lines)
    assert not [s for s in printed if s.startswith("RECOVERING")], "a recovery began first"
    assert f"STEP={KILL_AFTER + 1} " not in "\n".join(printed), "the step was not blocked"
    try:
        # in order, well before the hard-exit timer: the shutdown fails the collective
        gone_0 = _gone_after([pids[0]], t_kill, HARD_EXIT_S / 2)
        assert alive(pids[1])  # frozen: it cannot act on its death signal yet
    finally:
        t_cont = time.monotonic()
        os.kill(pids[1], signal.SIGCONT)
    gone_1 = _gone_after([pids[1]], t_cont, 20)
    assert _workers_of(proc.pid) == []
    print(f"\nkill -9 mid-collective: worker 0 (blocked in the collective) gone {gone_0:.2f}s "
          f"after the kill; frozen worker 1 gone {gone_1:.2f}s after SIGCONT")  # fmt: skip

    before_kill = {
        int(s.split()[0][5:]): float(s.split()[1][5:]) for s in printed if s.startswith("STEP=")
    }
    assert sorted(before_kill) == list(range(1, KILL_AFTER + 1)), before_kill
    (run_dir,) = out.iterdir()
    assert load_latest_checkpoint(run_dir).step == EVERY
    again = start_run(_job(out), data_dir=cache, resume_from=run_dir).wait(300)
    assert again is not None and again.status == "finished" and again.step == STEPS, again
    resumed = train_losses(run_dir)
    assert len(resumed) == STEPS
    # steps 1..EVERY are kept from the killed run; EVERY+1..KILL_AFTER are redone
    np.testing.assert_allclose(resumed[:KILL_AFTER], [before_kill[s] for s in range(1, KILL_AFTER + 1)],
                               rtol=1e-5)  # fmt: skip
