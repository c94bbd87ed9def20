"""A new user's first session on the real app, driven by real clicks, keys and wheel turns.

First launch (a fresh HOME, started from a folder that is not the repository) and the
welcome; a short demo run, left training in the background when the window closes (Ctrl+Q,
the real question answered with a click); the app reopened (a new window in this process),
attached to the run with its charts from step 1, the run finishing; Results with the adapter;
Runs. Then the failure paths: a batch that won't fit (refused, the fix applied with a click,
then Start runs it) and a dataset with mistakes (named by line, before any worker starts).

Deterministic: it waits on signals and conditions, never on a sleep. The one thing it holds
still is the engine process itself (SIGSTOP) while one window closes and the next opens, so
the reopened app always finds the run still training, however fast this machine steps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QMessageBox, QPushButton

from app.close_question import KEEP_TEXT
from app.plan_preview import WAITS_FOR_RUN
from engine.service.connection import read_connection
from tests.app.conftest import ROOT, stop_for_teardown
from tests.app.real_input import click, click_sidebar, controls, type_into, wheel
from tests.app.test_dataset_page import drop

STEPS = 8  # steps 1-2 train while the first window watches; the rest after it reopens
VAL_EVERY = 4  # validation points at steps 4 and 8
WONT_FIT_BATCH = 65536  # the field's maximum: at 64 tokens, ~176 GiB for 2 workers


@pytest.fixture
def first_launch(qtbot, settings, tmp_path: Path, monkeypatch):
    """The app as a new user opens it: empty settings, a fresh HOME, another working folder."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(elsewhere)
    return home


def open_app(qtbot, settings):
    """A main window as a launch of the app makes one (the same settings store each time)."""
    from app.main_window import MainWindow

    w = MainWindow(settings, discover=False)
    qtbot.addWidget(w, before_close_func=stop_for_teardown)
    w.resize(1200, 820)
    w.show()
    qtbot.waitExposed(w)
    return w


def answer_with_a_click(button_text: str) -> list[str]:
    """Click ``button_text`` in the next modal message box, with the mouse; returns the
    texts of the buttons it offered."""
    offered: list[str] = []

    def answer() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(10, answer)  # the box opens once close() runs: poll the loop
            return
        offered.extend(b.text() for b in box.buttons())
        click(next(b for b in box.buttons() if b.text() == button_text))

    QTimer.singleShot(0, answer)
    return offered


@contextlib.contextmanager
def engine_held_still(engine_dir: Path) -> Iterator[None]:
    """The engine process stopped (SIGSTOP) inside the block, continued however it ends."""
    info = read_connection(engine_dir)
    assert info is not None and info.pid != os.getpid()
    os.kill(info.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(info.pid, signal.SIGCONT)


def train_steps(qtbot, window) -> list[float]:
    chart = window.monitor_page.loss
    qtbot.waitUntil(lambda: not chart.dirty, timeout=5_000)
    return list(chart.series["train"][1].getData()[0])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_new_users_first_session(first_launch, qtbot, settings, engine_dir, tmp_path) -> None:
    began = time.monotonic()
    home = first_launch
    window = open_app(qtbot, settings)
    qtbot.waitUntil(
        lambda: window.model_page.info is not None and window.dataset_page.view is not None,
        timeout=30_000,
    )
    assert Path.cwd() != ROOT and not (Path.cwd() / "app").exists()

    # The first screen: the welcome says the demo is ready, what to press and where runs go;
    # this machine is described, not an empty table.
    assert window.stack.currentWidget() is window.cluster_page
    assert window.welcome is not None and window.welcome.isVisible()
    assert "Press Start training" in window.welcome.plain_text()
    assert "Runs are saved in ~/Orchard/runs." in window.welcome.plain_text()
    assert window.cluster_page.facts["memory"].text().endswith("GiB")

    # A short run: the user types the settings in (the wheel on the way scrolls, changes nothing).
    click_sidebar(window, "Training")
    assert window.stack.currentWidget() is window.training_page
    fields = controls(window)
    wheel(window, window.training_page.lr.slider, notches=-2)
    assert window.job.spec.optim.learning_rate == 1e-3
    type_into(qtbot, window, fields[("run", "steps")], str(STEPS))
    type_into(qtbot, window, fields[("run", "batch_size")], "2")
    type_into(qtbot, window, fields[("run", "val_every")], str(VAL_EVERY))
    assert window.training_page.runs_folder.text() == "~/Orchard/runs"
    click_sidebar(window, "Dataset")
    type_into(qtbot, window, fields[("data", "max_seq_len")], "64")
    spec = window.job.spec
    assert (spec.run.steps, spec.run.batch_size, spec.data.max_seq_len) == (STEPS, 2, 64)
    assert spec.run.out_dir == str(home / "Orchard" / "runs")
    # The Training page measured this machine and planned the run: two local processes,
    # said plainly to be one machine's cores, not two Macs.
    plan = window.training_page.plan_panel
    qtbot.waitUntil(lambda: plan.view is not None and plan.view.plan is not None, timeout=60_000)
    assert plan.headline.text().startswith("2 local processes on this machine: ")

    # Start from the welcome; the Monitor follows the run.
    click_sidebar(window, "Cluster")
    click(window.welcome.start_button)
    assert not window.welcome.isVisible() and not window.start_button.isEnabled()
    monitor = window.monitor_page
    qtbot.waitUntil(lambda: window.stack.currentWidget() is monitor, timeout=60_000)
    assert monitor.stop_button.isEnabled()
    qtbot.waitUntil(lambda: monitor.loss.point_count("train") >= 1, timeout=240_000)

    # Closing the window mid-run (Ctrl+Q) asks; "Keep training in the background" is clicked.
    with engine_held_still(engine_dir):
        offered = answer_with_a_click(KEEP_TEXT)
        QTest.keyClick(window, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
        assert KEEP_TEXT in offered and not window.isVisible()
        # Reopening the app: a new window, the same settings (no welcome this time).
        window = open_app(qtbot, settings)
        attached = []
        window.bridge.attached.connect(lambda e: attached.append(e.run.active))
        probing = []  # what the plan preview does, and whether a run was training then
        preview = window.cluster_page.plan
        preview.busy.connect(lambda text: probing.append((text, window.runner.running)))
    assert window.welcome is None

    # It finds the run still training, shows it from step 1 and follows it live to its end.
    monitor = window.monitor_page
    qtbot.waitUntil(lambda: bool(attached), timeout=30_000)
    assert attached[0], "the reopened app found the run already ended"
    assert window.stack.currentWidget() is monitor and not window.start_button.isEnabled()
    assert "Attached to the run in ~/Orchard/runs/run-" in monitor.log_view.toPlainText()
    # Training mid-run: the plan is shown, but this machine is not probed while it trains.
    click_sidebar(window, "Training")
    assert window.training_page.plan_panel.status.text() == WAITS_FOR_RUN
    click_sidebar(window, "Monitor")
    qtbot.waitUntil(lambda: monitor.state in ("finished", "failed", "stopped"), timeout=240_000)
    assert monitor.state == "finished", monitor.log_view.toPlainText()
    assert train_steps(qtbot, window) == list(range(1, STEPS + 1))  # history, then live: none lost
    assert monitor.loss.point_count("validation") == STEPS // VAL_EVERY
    assert monitor.lr.point_count("lr") == monitor.speed.point_count("tokens/s") == STEPS
    assert {"w0 compute", "w1 compute", "w0 comm", "w1 comm"} <= set(monitor.workers.series)
    # dist.mode auto: the coordinator's plan, measured against predicted, step by step
    assert monitor.steps.point_count("measured") == monitor.steps.point_count("predicted") == STEPS
    assert monitor.figures.full_text().startswith("Plan (auto): ")
    # the figures line is refreshed 200 ms after a burst of steps (the engine, continued after
    # the reopen, may deliver the rest at once and then finish within that time)
    qtbot.waitUntil(lambda: "scaling efficiency" in monitor.figures.full_text(), timeout=5_000)
    assert monitor.progress.value() == monitor.progress.maximum() == STEPS
    assert "ETA" not in monitor.eta.text()
    qtbot.waitUntil(window.start_button.isEnabled, timeout=60_000)
    # Now the machine is free: the probe held back during the run is made.
    qtbot.waitUntil(lambda: "local" in preview.probes, timeout=60_000)
    assert not [text for text, training in probing if training and text.startswith("Measuring")]

    # "See the results": the adapter, with a prompt from the dataset ready to try.
    click(monitor.results_button)
    results = window.results_page
    assert window.stack.currentWidget() is results
    qtbot.waitUntil(lambda: bool(results.adapter_dir), timeout=10_000)
    adapter = Path(results.adapter_dir)
    assert adapter.parent.parent == home / "Orchard" / "runs"
    assert (adapter / "adapters.safetensors").is_file()
    assert results.adapter_label.full_text() == f"~/Orchard/runs/{adapter.parent.name}/adapter"
    qtbot.waitUntil(lambda: bool(results.prompt.toPlainText()), timeout=10_000)
    sample = results.prompt.toPlainText()
    results.prompt.clear()
    click(results.generate_button)
    assert window.banner.text() == "Type a prompt first."
    click(results.prompt)
    QTest.keyClicks(results.prompt, sample)
    results.max_tokens.setValue(8)
    click(results.generate_button)
    qtbot.waitUntil(lambda: results.generate_button.isEnabled(), timeout=120_000)
    base, tuned = results.base_out.toPlainText(), results.adapter_out.toPlainText()
    assert base and tuned and "failed" not in base + tuned, (base, tuned)
    assert window.banner.text() == ""  # the warning went once a prompt was there

    # Runs lists it by name, finished, with its curve; its adapter opens in Results.
    click_sidebar(window, "Runs")
    runs = window.runs_page
    qtbot.waitUntil(lambda: runs.chart.point_count("train") == STEPS, timeout=20_000)
    assert runs.folder_label.full_text() == "Folder: ~/Orchard/runs"
    assert runs.table.item(0, 0).text() == "demo dataset · demo model"
    assert runs.table.item(0, 2).text() == "finished"
    assert runs.table.item(0, 3).text() == f"{STEPS} of {STEPS}"
    click(runs.open_button)
    assert window.stack.currentWidget() is results

    # A batch that won't fit: Start refuses it on the Training page, before any worker starts,
    # and offers what fits; one click applies it, and then Start runs it.
    click_sidebar(window, "Training")
    training = window.training_page
    fields = controls(window)
    type_into(qtbot, window, fields[("run", "batch_size")], str(WONT_FIT_BATCH))
    click(window.start_button)
    panel = training.preflight
    qtbot.waitUntil(panel.isVisible, timeout=60_000)
    assert "won't fit on this machine" in panel.text() and not window.runner.running
    assert training.scroll_area.verticalScrollBar().value() == 0  # scrolled to the refusal
    fix = next(b for b in panel.findChildren(QPushButton)
               if b.text().startswith("Apply: Gradient accumulation"))  # fmt: skip
    click(fix)
    accum = window.job.spec.run.grad_accum
    assert accum > 1 and window.job.spec.run.batch_size == WONT_FIT_BATCH  # same global batch
    assert fields[("run", "grad_accum")].spin.value() == accum  # the control shows it
    click(window.start_button)
    qtbot.waitUntil(lambda: window.stack.currentWidget() is monitor, timeout=60_000)
    assert window.runner.running and not panel.isVisible()
    assert window.runner.job.run.grad_accum == accum
    # A step of 65,536 sequences is not what this journey is for: Stop, before step 1.
    click(monitor.stop_button)
    qtbot.waitUntil(lambda: monitor.state in ("stopped", "finished", "failed"), timeout=120_000)
    assert monitor.state == "stopped", monitor.log_view.toPlainText()
    assert not monitor.results_button.isVisible()  # it trained nothing: nothing to try
    assert Path(results.adapter_dir) == adapter  # Results keeps the trained adapter
    qtbot.waitUntil(window.start_button.isEnabled, timeout=60_000)  # its workers are gone

    # A dataset with mistakes: each is named with its line, and Start refuses it the same way.
    click_sidebar(window, "Training")  # the user scrolls down the Training page (the wheel)
    wheel(window, training.plan_panel, notches=-4)
    assert training.scroll_area.verticalScrollBar().value() > 0
    bad = tmp_path / "mistakes.jsonl"
    lines = [json.dumps({"instruction": f"Q{i}", "output": f"A{i}."}) for i in range(6)]
    lines[2] = '{"instruction": "broken", "output": '
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dataset = window.dataset_page
    with qtbot.waitSignal(dataset.loaded, timeout=30_000):
        drop(window, bad)
    assert window.stack.currentWidget() is dataset and dataset.tabs.currentIndex() == 1
    assert dataset.problem_table.item(0, 2).text() == "3"
    assert "problem(s) to fix" in dataset.status.text()
    click(window.start_button)
    qtbot.waitUntil(lambda: window.stack.currentWidget() is training, timeout=60_000)
    qtbot.waitUntil(lambda: f"{bad}:3" in panel.text(), timeout=60_000)
    assert not window.runner.running and window.start_button.isEnabled()
    assert not [b for b in panel.findChildren(QPushButton) if b.text().startswith("Apply: ")]
    print(f"\njourney: {time.monotonic() - began:.1f}s")
