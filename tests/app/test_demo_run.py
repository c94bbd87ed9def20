"""A real demo run started from the window: 2 local workers, live charts, the adapter in Results."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_run_from_the_window(window, qtbot, tmp_path: Path) -> None:
    window.job.set("run", "steps", 4)
    window.job.set("run", "val_every", 2)
    window.job.set("dist", "workers", 2)
    monitor = window.monitor_page
    window.start_button.click()
    assert window.stack.currentWidget() is monitor
    assert not window.start_button.isEnabled() and monitor.stop_button.isEnabled()
    qtbot.waitUntil(lambda: monitor.state in ("finished", "failed", "stopped"), timeout=540_000)
    assert monitor.state == "finished", monitor.log_view.toPlainText()
    qtbot.waitUntil(lambda: monitor.loss.point_count("train") == 4, timeout=5_000)
    assert monitor.loss.point_count("validation") == 2
    assert monitor.lr.point_count("lr") == 4
    assert monitor.speed.point_count("tokens/s") == 4
    assert {"w0 compute", "w1 compute", "w0 comm", "w1 comm"} <= set(monitor.workers.series)
    # the redraw timer pushed the buffers to the plot items
    qtbot.waitUntil(lambda: len(monitor.loss.series["train"][1].getData()[0]) == 4, timeout=5_000)
    assert monitor.progress.value() == monitor.progress.maximum() == 4

    results = window.results_page
    qtbot.waitUntil(lambda: bool(results.adapter_dir), timeout=10_000)
    adapter = Path(results.adapter_dir)
    assert adapter.parent.parent == tmp_path / "runs"
    assert (adapter / "adapters.safetensors").is_file()
    assert results.files_label.text() == "adapters.safetensors · adapter_config.json"
    assert results.reveal.isEnabled() and results.generate_button.isEnabled()
    # Start comes back once the workers have shut down (just after "finished").
    qtbot.waitUntil(window.start_button.isEnabled, timeout=60_000)
    assert not monitor.stop_button.isEnabled()

    # Runs lists it, with its curve reloaded from metrics.jsonl.
    window.go_to(window.runs_page)
    qtbot.waitUntil(lambda: window.runs_page.chart.point_count("train") == 4, timeout=20_000)
    assert window.runs_page.runs[0].has_adapter

    # Base and adapter answer side by side, generated in child processes.
    results.prompt.setPlainText("Where does Pip live?")
    results.max_tokens.setValue(8)
    results.generate()
    assert not results.generate_button.isEnabled()
    qtbot.waitUntil(lambda: results.generate_button.isEnabled(), timeout=120_000)
    base, tuned = results.base_out.toPlainText(), results.adapter_out.toPlainText()
    assert base and tuned and "failed" not in base + tuned


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_stopped_run_resumes_from_the_runs_page(window, qtbot) -> None:
    window.job.set("run", "steps", 40)
    window.job.set("run", "checkpoint_every", 0)  # the stop writes the only checkpoint
    window.job.set("run", "batch_size", 2)  # short steps: the test is about Stop and Resume
    window.job.set("data", "max_seq_len", 64)
    window.job.set("dist", "workers", 1)
    monitor, runs = window.monitor_page, window.runs_page
    window.start_run()
    qtbot.waitUntil(lambda: monitor.loss.point_count("train") >= 2, timeout=300_000)
    monitor.stop_button.click()
    qtbot.waitUntil(lambda: monitor.state in ("stopped", "finished", "failed"), timeout=300_000)
    assert monitor.state == "stopped", monitor.log_view.toPlainText()
    assert monitor.loss.point_count("train") < 40
    qtbot.waitUntil(window.start_button.isEnabled, timeout=60_000)

    window.go_to(runs)
    qtbot.waitUntil(lambda: bool(runs.runs) and runs.resume_button.isEnabled(), timeout=20_000)
    stopped_at = runs.runs[0].checkpoint_step
    assert 2 <= stopped_at < 40 and runs.table.item(0, 2).text().endswith("of 40")
    runs.resume_button.click()  # the job file is read off the GUI thread, then the run starts
    qtbot.waitUntil(lambda: window.stack.currentWidget() is monitor, timeout=10_000)
    qtbot.waitUntil(lambda: monitor.state in ("finished", "failed", "stopped"), timeout=540_000)
    assert monitor.state == "finished", monitor.log_view.toPlainText()
    assert monitor.progress.value() == monitor.progress.maximum() == 40
    assert (
        f"resumed from step_{stopped_at:07d} at step {stopped_at}" in monitor.log_view.toPlainText()
    )
    qtbot.waitUntil(window.start_button.isEnabled, timeout=60_000)
    window.go_to(runs)
    qtbot.waitUntil(lambda: bool(runs.runs) and runs.runs[0].checkpoint_step == 40, timeout=20_000)
    assert not runs.resume_button.isEnabled()  # finished: nothing left to resume
