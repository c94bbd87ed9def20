"""A window attaches to the engine's run over the real channel: history on the Monitor from
step 1, then live, and its Stop reaches the engine. The engine here is the real service and
gRPC server in this process, with a scripted run instead of MLX (the slow tests train)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.events import MetricEvent, ProgressEvent, StateEvent
from engine.rpc.auth import new_token
from engine.rpc.engine_servicer import serve_engine
from engine.service.connection import (
    ConnectionInfo,
    listen_address,
    remove_connection,
    write_connection,
)
from engine.service.info import ENGINE_PROTOCOL_VERSION
from tests.service.test_service import JOB, ScriptedRun, make

TOTAL = 50


@pytest.fixture
def scripted_engine(engine_dir: Path):
    run = ScriptedRun()
    service = make(run)
    key = new_token()
    server, address = serve_engine(service, listen_address(engine_dir), key)
    info = ConnectionInfo(address, key, os.getpid(), ENGINE_PROTOCOL_VERSION, service.started_at)
    write_connection(engine_dir, info)
    try:
        yield service, run
    finally:
        run.finish.set()
        service.wait_run(10)
        remove_connection(engine_dir, os.getpid())  # this process is not an engine to end
        server.stop(0.5).wait(2)


def emit_steps(run: ScriptedRun, first: int, last: int) -> None:
    for s in range(first, last + 1):
        run.sink(MetricEvent(s, {"train_loss": 3.0 - s / 100, "learning_rate": 1e-3}))
        run.sink(MetricEvent(s, {"compute_s": 0.2, "comm_s": 0.01}, kind="worker", worker=0))
        run.sink(ProgressEvent(s, TOTAL, s * 0.1, (TOTAL - s) * 0.1))


def train_xs(window) -> list[float]:
    monitor = window.monitor_page
    return list(monitor.loss.series["train"][1].getData()[0])


def test_a_window_replays_the_run_then_follows_it_and_stops_it(
    scripted_engine, qtbot, settings, tmp_path: Path
) -> None:
    from app.main_window import MainWindow

    service, run = scripted_engine
    service.start(JOB, client="an app that was closed")
    assert run.launched.wait(5)
    run_dir = str(tmp_path / "runs" / "run-1")
    run.sink(StateEvent("preparing", "starting workers", run_dir))
    run.sink(StateEvent("running", "50 steps", run_dir, {"start_step": 0, "total_steps": TOTAL}))
    emit_steps(run, 1, 20)

    w = MainWindow(settings, discover=False)  # opening the app attaches
    qtbot.addWidget(w)
    w.show()
    monitor = w.monitor_page
    qtbot.waitUntil(lambda: monitor.loss.point_count("train") == 20, timeout=10_000)
    assert w.runner.running and not w.start_button.isEnabled() and monitor.stop_button.isEnabled()
    assert w.stack.currentWidget() is monitor and monitor.run_dir == run_dir
    assert monitor.progress.value() == 20 and monitor.progress.maximum() == TOTAL

    emit_steps(run, 21, 30)  # live, after the history
    qtbot.waitUntil(lambda: monitor.loss.point_count("train") == 30, timeout=10_000)
    qtbot.waitUntil(lambda: not monitor.loss.dirty, timeout=5_000)
    assert train_xs(w) == list(range(1, 31))
    assert monitor.workers.point_count("w0 compute") == 30

    monitor.stop_button.click()  # the window's Stop reaches the engine's run
    qtbot.waitUntil(lambda: monitor.state == "stopped", timeout=10_000)
    qtbot.waitUntil(w.start_button.isEnabled, timeout=10_000)
    assert not w.runner.running and service.status().run.state == "stopped"

    run.finish.clear()  # another client starts a run: the window follows it too
    service.start(JOB, client="orchard attach")
    run.sink(StateEvent("running", "", run_dir + "-2", {"start_step": 0, "total_steps": TOTAL}))
    emit_steps(run, 1, 3)
    qtbot.waitUntil(
        lambda: w.runner.running and monitor.loss.point_count("train") == 3, timeout=10_000
    )
    assert monitor.run_dir == run_dir + "-2"
    run.finish.set()
    qtbot.waitUntil(lambda: monitor.state == "finished" and not w.runner.running, timeout=10_000)


def test_a_busy_engine_refuses_start_with_its_reason(window, qtbot, scripted_engine) -> None:
    service, run = scripted_engine  # the engine came up after the window opened: unwatched
    service.start(JOB, client="another app")
    assert run.launched.wait(5)
    run.sink(StateEvent("running", "", "/runs/theirs", {"start_step": 0, "total_steps": TOTAL}))
    window.start_run()
    qtbot.waitUntil(
        lambda: "busy with a run in /runs/theirs" in window.banner.text(), timeout=10_000
    )
    qtbot.waitUntil(lambda: window.monitor_page.run_dir == "/runs/theirs", timeout=10_000)
    assert window.runner.running  # it follows the run that holds the engine
