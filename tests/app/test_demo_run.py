"""Stop and Resume from the window, on a real run (the first demo run is in test_journey.py)."""

from __future__ import annotations

import pytest


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
    assert "ETA" not in monitor.eta.text()  # nothing is coming any more
    assert monitor.loss.point_count("train") < 40
    qtbot.waitUntil(window.start_button.isEnabled, timeout=60_000)

    window.go_to(runs)
    qtbot.waitUntil(lambda: bool(runs.runs) and runs.resume_button.isEnabled(), timeout=20_000)
    stopped_at = runs.runs[0].checkpoint_step
    assert 2 <= stopped_at < 40 and runs.table.item(0, 3).text().endswith("of 40")
    assert runs.table.item(0, 2).text() == "stopped"
    runs.resume_button.click()  # the job file is read off the GUI thread, then the run starts
    qtbot.waitUntil(lambda: window.stack.currentWidget() is monitor, timeout=10_000)
    qtbot.waitUntil(lambda: monitor.state in ("finished", "failed", "stopped"), timeout=540_000)
    assert monitor.state == "finished", monitor.log_view.toPlainText()
    assert monitor.progress.value() == monitor.progress.maximum() == 40
    # The whole run is plotted, not only the steps since the resume (history from metrics.jsonl).
    qtbot.waitUntil(lambda: monitor.loss.point_count("train") == 40, timeout=10_000)
    xs, _ = monitor.loss.series["train"][0].view()
    assert xs.tolist() == list(range(1, 41))
    assert (
        f"resumed from step_{stopped_at:07d} at step {stopped_at}" in monitor.log_view.toPlainText()
    )
    qtbot.waitUntil(window.start_button.isEnabled, timeout=60_000)
    window.go_to(runs)
    qtbot.waitUntil(lambda: bool(runs.runs) and runs.runs[0].checkpoint_step == 40, timeout=20_000)
    assert not runs.resume_button.isEnabled()  # finished: nothing left to resume
