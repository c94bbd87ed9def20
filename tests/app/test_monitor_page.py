"""The Monitor page on its own, fed engine events as the bridge delivers them."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor
from PySide6.QtTest import QTest

from engine.events import MetricEvent, ProgressEvent, StateEvent


@pytest.fixture
def monitor(qtbot):
    from app.pages.monitor_page import MonitorPage

    page = MonitorPage()
    qtbot.addWidget(page)
    page.resize(1100, 700)
    page.show()
    qtbot.waitExposed(page)
    return page


def train(step: int, loss: float) -> MetricEvent:
    return MetricEvent(step=step, values={"train_loss": loss, "learning_rate": 1e-3})


def pixel_near(chart, x: float, y: float) -> set[str]:
    """Colours drawn within 3 px of the data point (x, y) on ``chart``."""
    image = chart.grab().toImage()
    at = chart.mapFromScene(chart.plotItem.vb.mapViewToScene(QPointF(x, y)))
    return {
        QColor(image.pixel(at.x() + dx, at.y() + dy)).name()
        for dx in range(-3, 4)
        for dy in range(-3, 4)
    }


def test_before_any_run_and_a_single_first_point(monitor, qtbot) -> None:
    assert monitor.progress.text() == "No run yet"
    monitor.reset(10)
    assert monitor.progress.text() == "0 / 10 steps"
    monitor.on_state(StateEvent("preparing", "starting workers", "/tmp/run"))
    assert monitor.state_label.full_text() == "Preparing: starting workers"
    monitor.on_metric(train(1, 2.5))
    monitor.clock.flush()
    qtbot.wait(20)
    assert "#2e7d32" in pixel_near(monitor.loss, 1, 2.5), "the first point is not drawn"
    monitor.on_metric(train(2, 2.4))
    monitor.clock.flush()
    assert monitor.loss.series["train"][1].opts["symbol"] is None  # a line from two points on


def test_a_new_run_resets_the_axes(monitor, qtbot) -> None:
    monitor.reset(500)
    for step in range(100, 400):
        monitor.on_metric(train(step, 900.0 + step))
    monitor.clock.flush()
    monitor.loss.plotItem.vb.setRange(xRange=(150, 250))  # the user zoomed in (autorange off)
    monitor.reset(10)
    (x0, x1), (y0, y1) = monitor.loss.plotItem.vb.viewRange()
    assert x1 <= 1 and y1 <= 1, "an empty new run still shows the last run's axes"
    monitor.on_metric(train(1, 2.0))
    monitor.on_metric(train(2, 1.5))
    monitor.clock.flush()
    (x0, x1), (y0, y1) = monitor.loss.plotItem.vb.viewRange()
    assert x1 < 10 and y1 < 10, "the axes still show the previous run"


def test_units_are_worded_plainly(monitor) -> None:
    monitor.reset(3)
    for step in (1, 2, 3):
        monitor.on_metric(
            MetricEvent(step, {"compute_s": 0.002 * step, "comm_s": 0.001}, "worker", worker=0)
        )
    monitor.clock.flush()
    label = monitor.workers.getAxis("left").labelString()
    assert "x0.001" not in label and "seconds" in label


def test_eta_goes_after_stop_and_finished_leads_to_results(monitor, qtbot) -> None:
    monitor.reset(10)
    monitor.on_state(StateEvent("running", "10 steps on 2 workers", "/tmp/run",
                                {"start_step": 0, "total_steps": 10}))  # fmt: skip
    monitor.on_progress(ProgressEvent(step=3, total_steps=10, elapsed_s=30, eta_s=70))
    assert "ETA 1:10" in monitor.eta.text()
    monitor.on_state(StateEvent("stopped", "step 3 of 10", "/tmp/run", {"adapter_dir": "/a"}))
    monitor.on_progress(ProgressEvent(step=3, total_steps=10, elapsed_s=31, eta_s=69))  # late
    assert "ETA" not in monitor.eta.text() and "0:3" in monitor.eta.text()

    monitor.reset(10)
    assert not monitor.results_button.isVisible()
    monitor.on_state(StateEvent("finished", "step 10 of 10", "/tmp/run", {"adapter_dir": "/a"}))
    assert monitor.results_button.isVisible()
    with qtbot.waitSignal(monitor.results_requested, timeout=1_000):
        QTest.mouseClick(monitor.results_button, Qt.MouseButton.LeftButton)


def rows(first: int, last: int) -> list[dict]:
    out = []
    for s in range(first, last + 1):
        out.append({"step": s, "kind": "train", "train_loss": 3.0 - s / 100, "learning_rate": 1e-3})
        out.append({"step": s, "kind": "worker", "worker": 0, "compute_s": 0.5, "comm_s": 0.1})
        if s % 5 == 0:
            out.append({"step": s, "kind": "val", "val_loss": 3.1 - s / 100})
    return out


@pytest.mark.parametrize("history_first", [True, False])
def test_a_resumed_run_shows_its_whole_history(monitor, history_first: bool) -> None:
    """History from metrics.jsonl and live events, in either order, make one clean curve;
    rows past the checkpoint the run resumes from are left out (the run redoes them)."""
    monitor.reset(40)
    monitor.on_state(StateEvent("running", "20 steps on 1 worker", "/tmp/run",
                                {"start_step": 20, "total_steps": 40}))  # fmt: skip
    live = [train(s, 2.0) for s in (21, 22)]
    if history_first:
        monitor.load_history(rows(1, 25))
    for e in live:
        monitor.on_metric(e)
    if not history_first:
        monitor.load_history(rows(1, 25))
    xs, _ = monitor.loss.series["train"][0].view()
    assert xs.tolist() == list(range(1, 23))
    assert monitor.loss.point_count("validation") == 4  # steps 5, 10, 15, 20
    assert monitor.workers.point_count("w0 compute") == 20


def test_what_shows_above_the_charts_never_moves_them(monitor, qtbot) -> None:
    """A run's figures and its transfers come and go above the charts without resizing them:
    a resize repaints all six at once, a stall of the window (bench/gui_latency.py)."""
    from app.widgets.transfer_panel import TransferPanel
    from engine.events import ShipEvent

    transfers = TransferPanel()
    transfers.float_over(monitor.chart_area)  # as the main window places it
    monitor.reset(10)
    qtbot.wait(50)
    before = [c.geometry() for c in monitor.charts]
    transfers.on_event(ShipEvent("10.0.0.2:50051", 0, 1_000, 4_000, 1, 3, rate_bps=1e6))
    transfers.on_event(ShipEvent("10.0.0.3:50051", 1, 0, 0, 0, 0, held_bytes=4_000, done=True))
    plan = {"mode": "all-reduce", "compression": "none", "grad_accum": 1,
            "predicted_step_s": 0.5, "speedup": 1.6, "slows": ["a Mac on Wi-Fi"] * 20}  # fmt: skip
    monitor.on_state(StateEvent("running", "", "/tmp/run",
                                {"start_step": 0, "total_steps": 10, "plan": plan}))  # fmt: skip
    for s in (1, 2, 3):
        monitor.on_metric(MetricEvent(s, {"step_time_s": 0.5, "predicted_step_s": 0.4,
                                          "scaling_efficiency": 0.9, "tokens_per_s": 900.0}))  # fmt: skip
    transfers.clear()
    qtbot.waitUntil(lambda: "Step 3" in monitor.figures.full_text(), timeout=2_000)
    qtbot.wait(50)
    assert [c.geometry() for c in monitor.charts] == before
    # the long plan line is cut to the width, whole in the tooltip
    shown = monitor.figures.text().splitlines()
    assert len(shown) == 2 and shown[0].endswith("…")
    assert "a Mac on Wi-Fi would slow it" in monitor.figures.toolTip()
    metrics = monitor.figures.fontMetrics()
    assert all(metrics.horizontalAdvance(line) <= monitor.figures.width() for line in shown)
