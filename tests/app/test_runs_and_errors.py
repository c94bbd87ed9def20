"""Runs listed from a run folder; errors become readable messages; late results are dropped."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from engine.config import JobSpec
from engine.events import MetricEvent
from engine.train.metrics import MetricsLog
from tests.app.conftest import DEMO_DATASET


def write_run(root: Path, name: str, steps: int) -> Path:
    """A run folder as the engine writes it (job.toml + metrics.jsonl through MetricsLog)."""
    folder = root / name
    folder.mkdir(parents=True)
    JobSpec().save(folder / "job.toml")
    log = MetricsLog(folder, None)
    for s in range(1, steps + 1):
        log.emit(MetricEvent(step=s, values={"train_loss": 3.0 - 0.01 * s, "learning_rate": 1e-3}))
        if s % 10 == 0:
            log.emit(MetricEvent(step=s, values={"val_loss": 3.1 - 0.01 * s}, kind="val"))
    log.close()
    return folder


def test_runs_page_reloads_curves_from_metrics(window, qtbot, tmp_path: Path) -> None:
    write_run(tmp_path / "runs", "first", 50)
    page = window.runs_page
    window.go_to(page)
    qtbot.waitUntil(lambda: page.chart.point_count("train") == 50, timeout=10_000)
    assert page.chart.point_count("validation") == 5
    assert page.table.item(0, 0).text() == "demo dataset · demo model"  # not a timestamp
    assert page.table.item(0, 0).toolTip().endswith("first")  # the folder, on hover
    assert page.table.item(0, 4).text() == f"{3.0 - 0.5:.4f}"
    assert not page.open_button.isEnabled()  # no adapter in this run


def fail_run(folder: Path, message: str) -> None:
    """End a run as the coordinator does when a run dies: log.exception into its log.txt."""
    from engine.train.run_dir import attach_log_file, detach_log_file

    handler = attach_log_file(folder)
    try:
        try:
            raise RuntimeError(message)
        except RuntimeError:
            logging.getLogger("engine.runtime.coordinator").exception("run failed")
    finally:
        detach_log_file(handler)


def test_runs_show_their_status_steps_and_name(window, qtbot, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    failed = write_run(runs, "run-20261206-101500", 7)
    fail_run(failed, "worker 127.0.0.1:50051 lost during step 8: out of memory")
    named = write_run(runs, "run-20261206-111500", 3)
    job = JobSpec()
    job.run.name = "pip-stories-v2"
    job.save(named / "job.toml")
    page = window.runs_page
    window.go_to(page)
    qtbot.waitUntil(lambda: len(page.runs) == 2, timeout=10_000)
    table = {page.table.item(r, 0).text(): r for r in range(page.table.rowCount())}
    assert set(table) == {"pip-stories-v2", "demo dataset · demo model"}
    r = table["demo dataset · demo model"]
    assert page.table.item(r, 2).text() == "failed"
    assert "out of memory" in page.table.item(r, 2).toolTip()
    assert page.table.item(r, 3).text() == "7 of 200"  # its real steps, of what it was set to
    page.table.selectRow(r)
    assert "out of memory" in page.detail.text()
    assert page.table.item(table["pip-stories-v2"], 2).text() == "interrupted"


def test_open_adapter_in_results_goes_there_with_a_dataset_prompt(window, qtbot, tmp_path) -> None:
    from engine.data import read_dataset

    folder = write_run(tmp_path / "runs", "run-20261206-121500", 5)
    (folder / "adapter").mkdir()
    for name in ("adapters.safetensors", "adapter_config.json"):
        (folder / "adapter" / name).write_bytes(b"{}")
    page, results = window.runs_page, window.results_page
    window.go_to(page)
    qtbot.waitUntil(lambda: page.open_button.isEnabled(), timeout=10_000)
    QTest.mouseClick(page.open_button, Qt.MouseButton.LeftButton)
    assert window.stack.currentWidget() is results
    qtbot.waitUntil(lambda: results.adapter_dir == str(folder / "adapter"), timeout=10_000)
    qtbot.waitUntil(lambda: bool(results.prompt.toPlainText()), timeout=10_000)
    demo = read_dataset(str(DEMO_DATASET))
    prompts = {m["content"] for r in demo.records for m in r.messages if m["role"] == "user"}
    assert results.prompt.toPlainText() in prompts
    assert results.adapter_label.full_text() == str(folder / "adapter")


def test_uncaught_exception_shows_a_message_not_a_traceback(window, qtbot) -> None:
    from app.errors import ErrorReporter, install_excepthook

    reporter = ErrorReporter()
    reporter.message.connect(window.show_message)
    old = sys.excepthook
    install_excepthook(reporter)
    try:
        try:
            raise ValueError("adapter_config.json: rank: expected an integer")
        except ValueError as e:
            sys.excepthook(type(e), e, e.__traceback__)
    finally:
        sys.excepthook = old
    text = window.banner.text()
    assert "rank: expected an integer" in text and "Traceback" not in text


def test_invalid_job_does_not_start(window) -> None:
    window.job.spec.lora.target_modules = []  # as a hand-edited job could leave it
    window.start_run()
    assert not window.runner.running
    assert "lora.target_modules" in window.banner.text()


def test_results_arriving_after_the_window_closed_are_dropped(qtbot, settings) -> None:
    from app.main_window import MainWindow

    w = MainWindow(settings, discover=False)
    page = w.dataset_page
    page.reload()  # a read is in flight...
    w.close()
    w.deleteLater()
    qtbot.wait(50)
    # ...and its result must not touch the deleted widgets (pytest-qt fails on any exception).
    from PySide6.QtCore import QThreadPool

    assert QThreadPool.globalInstance().waitForDone(60_000)
    qtbot.wait(100)


def test_generation_failure_is_a_readable_line(window, qtbot, tmp_path: Path) -> None:
    bogus = tmp_path / "run" / "adapter"
    bogus.mkdir(parents=True)
    (bogus / "adapter_config.json").write_text("{}", encoding="utf-8")
    page = window.results_page
    page.show_adapter(str(bogus), "demo", ["adapter_config.json"])
    assert "Missing adapters.safetensors" in page.files_label.text()
    page.prompt.setPlainText("hello")
    page.max_tokens.setValue(4)
    page.generate()
    qtbot.waitUntil(page.generate_button.isEnabled, timeout=120_000)
    text = page.adapter_out.toPlainText()
    assert text.startswith("Generation failed:") and "Traceback" not in text
    assert "adapter_config.json" in text
