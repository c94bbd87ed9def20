"""A new user's first session on the real app, driven by real clicks, keys and wheel turns.

First launch (a fresh HOME, started from a folder that is not the repository), the welcome,
a short demo run to the end, Results with the adapter, Runs; then a dataset with mistakes.
This replaces the old window demo-run test: it covers the same run and more.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from tests.app.conftest import ROOT
from tests.app.real_input import click, click_sidebar, controls, type_into, wheel
from tests.app.test_dataset_page import drop

STEPS = 3


@pytest.fixture
def first_launch(qtbot, settings, tmp_path: Path, monkeypatch):
    """The app as a new user opens it: empty settings, a fresh HOME, another working folder."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(elsewhere)
    from app.main_window import MainWindow

    w = MainWindow(settings, discover=False)
    qtbot.addWidget(w)
    w.resize(1200, 820)
    w.show()
    qtbot.waitExposed(w)
    qtbot.waitUntil(
        lambda: w.model_page.info is not None and w.dataset_page.view is not None, timeout=30_000
    )
    yield w, tmp_path
    w.runner.stop()
    w.runner.join(30)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_new_users_first_session(first_launch, qtbot) -> None:
    window, tmp_path = first_launch
    assert Path.cwd() != ROOT and not (Path.cwd() / "app").exists()

    # The first screen: the welcome says the demo is ready and what to press; this machine
    # is described, not an empty table.
    assert window.stack.currentWidget() is window.cluster_page
    assert window.welcome is not None and window.welcome.isVisible()
    assert "Press Start training" in window.welcome.plain_text()
    assert window.cluster_page.facts["memory"].text().endswith("GiB")

    # A short run: the user types the settings in (the wheel on the way scrolls, changes nothing).
    click_sidebar(window, "Training")
    assert window.stack.currentWidget() is window.training_page
    fields = controls(window)
    wheel(window, window.training_page.lr.slider, notches=-2)
    assert window.job.spec.optim.learning_rate == 1e-3
    type_into(qtbot, window, fields[("run", "steps")], str(STEPS))
    type_into(qtbot, window, fields[("run", "batch_size")], "2")
    type_into(qtbot, window, fields[("run", "val_every")], "2")
    click_sidebar(window, "Dataset")
    type_into(qtbot, window, fields[("data", "max_seq_len")], "64")
    spec = window.job.spec
    assert (spec.run.steps, spec.run.batch_size, spec.data.max_seq_len) == (STEPS, 2, 64)
    # The Training page measured this machine and planned the run: two local processes,
    # said plainly to be one machine's cores, not two Macs.
    plan = window.training_page.plan_panel
    qtbot.waitUntil(lambda: plan.view is not None and plan.view.plan is not None, timeout=60_000)
    assert plan.headline.text().startswith("2 local processes on this machine: ")

    # Start from the welcome; the Monitor follows the run to its end.
    click_sidebar(window, "Cluster")
    click(window.welcome.start_button)
    assert not window.welcome.isVisible() and not window.start_button.isEnabled()
    monitor = window.monitor_page
    qtbot.waitUntil(
        lambda: window.stack.currentWidget() is monitor, timeout=60_000
    )  # checked first
    assert monitor.stop_button.isEnabled()
    qtbot.waitUntil(lambda: monitor.state in ("finished", "failed", "stopped"), timeout=240_000)
    assert monitor.state == "finished", monitor.log_view.toPlainText()
    qtbot.waitUntil(lambda: monitor.loss.point_count("train") == STEPS, timeout=5_000)
    assert monitor.loss.point_count("validation") == 2  # steps 2 and 3 (the last)
    assert monitor.lr.point_count("lr") == monitor.speed.point_count("tokens/s") == STEPS
    assert {"w0 compute", "w1 compute", "w0 comm", "w1 comm"} <= set(monitor.workers.series)
    # dist.mode auto: the coordinator's plan, measured against predicted, step by step
    assert monitor.steps.point_count("measured") == monitor.steps.point_count("predicted") == STEPS
    assert monitor.figures.text().startswith("Plan (auto): ")
    assert (
        "s predicted (" in monitor.figures.text() and "scaling efficiency" in monitor.figures.text()
    )
    assert monitor.progress.value() == monitor.progress.maximum() == STEPS
    assert "ETA" not in monitor.eta.text()
    qtbot.waitUntil(window.start_button.isEnabled, timeout=60_000)

    # "See the results": the adapter, with a prompt from the dataset ready to try.
    click(monitor.results_button)
    results = window.results_page
    assert window.stack.currentWidget() is results
    qtbot.waitUntil(lambda: bool(results.adapter_dir), timeout=10_000)
    adapter = Path(results.adapter_dir)
    assert adapter.is_absolute() and adapter.is_relative_to(tmp_path)
    assert (adapter / "adapters.safetensors").is_file()
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
    assert runs.table.item(0, 0).text() == "demo dataset · demo model"
    assert runs.table.item(0, 2).text() == "finished"
    assert runs.table.item(0, 3).text() == f"{STEPS} of {STEPS}"
    click(runs.open_button)
    assert window.stack.currentWidget() is results

    # A dataset with mistakes: each is named with its line, on the Dataset page.
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
    assert Qt  # the failure paths that need the Start gating and the engine process follow
