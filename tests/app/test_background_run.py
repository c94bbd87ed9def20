"""Runs outlive the window: a killed app, the close question, and windows that attach later."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from app.close_question import KEEP_TEXT, STOP_TEXT
from engine.rpc.engine_client import EngineClient
from engine.service.connection import pid_alive, read_connection

ROOT = Path(__file__).resolve().parents[2]
APP_SCRIPT = Path(__file__).with_name("app_proc.py")
STEPS = 5000  # far more than the test waits for: the run is still going whenever it looks


def read_step(proc: subprocess.Popen, at_least: int, timeout_s: float) -> int:
    """The app process's STEP=<n> lines, until one reaches ``at_least``."""
    fd, buf, deadline = proc.stdout.fileno(), b"", time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            piece = os.read(fd, 4096)
            assert piece, f"the app exited with {proc.poll()} before step {at_least}"
            buf += piece
            steps = [int(x[5:]) for x in buf.decode().split() if x.startswith("STEP=")]
            if steps and steps[-1] >= at_least:
                return steps[-1]
    raise AssertionError(f"the app did not reach step {at_least} in {timeout_s}s")


def engine_step_after(client: EngineClient, step: int, timeout_s: float = 120) -> int:
    """The engine's run reaches a step past ``step`` (it trains on, whoever watches)."""
    deadline = time.monotonic() + timeout_s
    while (run := client.status().run) is not None and run.active and run.step <= step:
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
    assert run is not None and run.active, run
    return run.step


def answer_close_question(qtbot, button_text: str | None) -> list[str]:
    """Click ``button_text`` (None: Cancel) in the question the next close() asks; returns
    the texts of the buttons it offered."""
    seen: list[str] = []

    def click() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, click)
            return
        seen.extend(b.text() for b in box.buttons())
        if button_text is None:
            box.button(QMessageBox.StandardButton.Cancel).click()
        else:
            next(b for b in box.buttons() if b.text() == button_text).click()

    QTimer.singleShot(0, click)
    return seen


def open_window(qtbot, settings):
    from app.main_window import MainWindow

    w = MainWindow(settings, discover=False)
    qtbot.addWidget(w)
    w.show()
    return w


def wait_attached_with_history(qtbot, w, past_step: int) -> list[float]:
    """The window attached to the engine's run, charted it from step 1 (history) and goes on
    past ``past_step`` (live); returns the train chart's steps."""
    monitor = w.monitor_page
    qtbot.waitUntil(lambda: w.runner.running, timeout=30_000)
    qtbot.waitUntil(lambda: monitor.loss.point_count("train") > past_step + 1, timeout=120_000)
    assert w.stack.currentWidget() is monitor
    assert not w.start_button.isEnabled() and monitor.stop_button.isEnabled()
    assert "Attached to the run in" in monitor.log_view.toPlainText()
    qtbot.waitUntil(lambda: not monitor.loss.dirty, timeout=5_000)
    xs = list(monitor.loss.series["train"][1].getData()[0])
    assert xs == list(range(1, len(xs) + 1))  # from step 1, no step missing or repeated
    return xs


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_app_leaves_the_run_training_and_later_windows_attach(
    qtbot, settings, tmp_path: Path, engine_dir: Path
) -> None:
    app = subprocess.Popen(
        [sys.executable, str(APP_SCRIPT), str(tmp_path / "app.ini"), str(tmp_path / "runs"),
         str(STEPS)],
        stdout=subprocess.PIPE, stderr=open(tmp_path / "app.log", "wb"), cwd=ROOT,
    )  # fmt: skip
    try:
        killed_at = read_step(app, 2, timeout_s=300)
    finally:
        os.kill(app.pid, signal.SIGKILL)  # a crash: no closeEvent, no goodbye to the engine
        app.wait(10)
    info = read_connection(engine_dir)
    assert info is not None and pid_alive(info.pid) and info.pid != app.pid
    headless = EngineClient(info.address, info.key)
    step = engine_step_after(headless, killed_at)  # the crash did not stop the run

    w2 = open_window(qtbot, settings)  # reopening: history from step 1, then live
    wait_attached_with_history(qtbot, w2, step)

    offered = answer_close_question(qtbot, None)  # Cancel keeps the window and the run
    assert not w2.close() and w2.isVisible() and w2.runner.running
    assert set(offered) == {KEEP_TEXT, STOP_TEXT, "Cancel"}

    answer_close_question(qtbot, KEEP_TEXT)  # keep training in the background
    assert w2.close() and not w2.isVisible()
    deadline = time.monotonic() + 10
    while headless.status().clients:  # w2 let go of its stream...
        assert time.monotonic() < deadline
        time.sleep(0.05)
    step = engine_step_after(headless, headless.status().run.step)  # ...and the run trains on

    w3 = open_window(qtbot, settings)
    wait_attached_with_history(qtbot, w3, step)
    answer_close_question(qtbot, STOP_TEXT)  # stop with a checkpoint, no window left to watch
    assert w3.close()
    deadline = time.monotonic() + 120
    while (run := headless.status().run).active:
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
    assert run.state == "stopped" and step < run.step < STEPS
    assert (Path(run.run_dir) / "checkpoints" / "latest").exists()
    headless.close()


def test_closing_during_a_run_asks_and_does_what_was_chosen(window, qtbot, monkeypatch) -> None:
    """The question and each answer, with the controller's calls recorded (the real run
    behind each answer is the slow test above)."""
    from app.run_controller import RunController

    calls: list[str] = []
    monkeypatch.setattr(RunController, "running", property(lambda self: True))
    for name in ("stop", "detach", "release"):
        monkeypatch.setattr(window.runner, name, lambda *a, name=name: calls.append(name))

    offered = answer_close_question(qtbot, None)
    assert not window.close() and window.isVisible() and calls == []  # Cancel: nothing happens
    assert set(offered) == {KEEP_TEXT, STOP_TEXT, "Cancel"}
    answer_close_question(qtbot, KEEP_TEXT)
    assert window.close() and calls == ["detach"]  # the run trains on, unwatched
    window.show()
    calls.clear()
    answer_close_question(qtbot, STOP_TEXT)
    assert window.close() and calls == ["stop", "detach"]  # stop with a checkpoint, then go
    monkeypatch.undo()  # before pytest-qt closes the window again at teardown
