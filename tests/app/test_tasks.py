"""Background tasks: results come back on the GUI thread; a process exiting mid-task says nothing."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from app.tasks import run_task

ROOT = Path(__file__).resolve().parents[2]
EXITS_MID_TASK = """
import threading
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.tasks import run_task
started = threading.Event()
run_task(lambda: (started.set(), threading.Event().wait(0.5)), on_done=print)
started.wait()  # the task runs as the interpreter exits (a test process ending mid-probe)
"""


def test_a_result_comes_back_on_the_gui_thread(qtbot) -> None:
    got: list[tuple[int, bool]] = []
    gui = threading.current_thread()
    run_task(lambda: 42, on_done=lambda r: got.append((r, threading.current_thread() is gui)))
    qtbot.waitUntil(lambda: bool(got))
    assert got == [(42, True)]


def test_an_error_is_one_readable_line(qtbot) -> None:
    def broken() -> None:
        raise ValueError("data.path: no such file")

    got: list[str] = []
    run_task(broken, on_done=got.append, on_error=got.append)
    qtbot.waitUntil(lambda: bool(got))
    assert got == ["data.path: no such file"]


def test_exiting_while_a_task_runs_prints_nothing() -> None:
    done = subprocess.run(
        [sys.executable, "-c", EXITS_MID_TASK], cwd=ROOT, capture_output=True, text=True,
        timeout=60, env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Signal source has been deleted" not in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
