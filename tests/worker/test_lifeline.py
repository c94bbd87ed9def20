"""No worker process outlives its engine: normal end, SIGINT, and kill -9 of the engine."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("parent_script.py")


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (psutil-free: /proc, else kill 0)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.exists():
        try:
            return stat.read_text().split(") ", 1)[1][0] not in "ZX"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def start_parent(tmp_path: Path, how: str) -> tuple[subprocess.Popen, list[int]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path), "2", how],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT)  # fmt: skip
    line = proc.stdout.readline()  # bounded by the pytest timeout; workers start in ~1 s
    assert line.startswith("PIDS="), f"parent printed {line!r}"
    pids = [int(p) for p in line.strip()[5:].split(",")]
    assert all(alive(p) for p in pids)
    return proc, pids


@pytest.mark.timeout(120)
def test_workers_end_with_a_normal_exit(tmp_path):
    proc, pids = start_parent(tmp_path, "exit")
    proc.stdin.write("end\n")  # the parent ends normally only after the workers were seen alive
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    assert wait_gone(pids, 10) == []


@pytest.mark.timeout(120)
def test_workers_end_after_sigint_to_the_engine(tmp_path):
    proc, pids = start_parent(tmp_path, "wait")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert wait_gone(pids, 10) == []


@pytest.mark.timeout(120)
def test_workers_end_after_kill_9_of_the_engine(tmp_path):
    proc, pids = start_parent(tmp_path, "wait")
    proc.kill()
    proc.wait(timeout=10)
    assert wait_gone(pids, 10) == [], "orphaned workers survived their engine"
    logs = " ".join(p.read_text() for p in tmp_path.glob("worker*.log"))
    assert "parent is gone" in logs or "shutting down" in logs


def test_watchdog_fires_on_pipe_eof_and_on_a_changed_parent():
    """The macOS path (no prctl): EOF on the parent's pipe, or a parent pid that changed."""
    import threading

    from engine.worker.lifeline import start_watchdog

    fired: list[str] = []
    done = threading.Event()

    def gone(reason: str) -> None:
        fired.append(reason)
        done.set()

    r, w = os.pipe()
    start_watchdog(os.getppid(), r, on_parent_gone=gone, interval_s=0.05)
    time.sleep(0.2)
    assert not fired
    os.close(w)
    assert done.wait(5) and "end-of-file" in fired[0]
    os.close(r)

    done.clear()
    fired.clear()
    start_watchdog(os.getppid() + 1_000_000, None, on_parent_gone=gone, interval_s=0.05)
    assert done.wait(5) and "parent pid changed" in fired[0]
