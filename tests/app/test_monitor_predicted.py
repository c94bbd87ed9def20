"""Measured against predicted on the Monitor: the planner's step time dashed beside the
measured one, the scaling efficiency, and each worker's share of the batch, from the events
the coordinator emits (the "running" StateEvent's ``plan``; each step's MetricEvents)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from app.widgets.run_figures import NO_PREDICTION
from engine.events import MetricEvent, StateEvent
from tests.app.test_monitor_page import pixel_near

PLAN = {  # engine.plan.resolve.plan_details, as the first "running" StateEvent carries it
    "mode": "all-reduce", "compression": "none", "grad_accum": 1, "predicted_step_s": 0.5,
    "predicted_tokens_per_s": 2048.0, "speedup": 1.6, "efficiency": 0.8, "shares": [5, 3],
    "reason": "all-reduce: predicted 0.500s a step", "contributions": {}, "slows": [],
    "refused": {},
}  # fmt: skip


@pytest.fixture
def monitor(qtbot):
    from app.pages.monitor_page import MonitorPage

    page = MonitorPage()
    qtbot.addWidget(page)
    page.resize(1100, 700)
    page.show()
    qtbot.waitExposed(page)
    page.reset(10)
    return page


def step(page, n: int, measured: float, predicted: float | None = None, eff: float | None = None,
         shares: tuple[float, ...] | None = (5.0, 3.0)) -> None:  # fmt: skip
    values = {"train_loss": 2.0, "step_time_s": measured, "tokens_per_s": 1000.0,
              "work_tokens_per_s": 1400.0}  # fmt: skip
    if predicted is not None:
        values["predicted_step_s"] = predicted
    if eff is not None:
        values["scaling_efficiency"] = eff
    page.on_metric(MetricEvent(n, values))
    for w in range(2):
        row = {"tokens": 256.0 * (w + 1), "compute_s": 0.4, "comm_s": 0.05}
        if shares is not None:  # balance's field (engine/runtime/balance.py): sequences
            row["share"] = shares[w]
        page.on_metric(MetricEvent(n, row, "worker", worker=w))


def test_measured_against_predicted_live(monitor, qtbot) -> None:
    monitor.on_state(StateEvent("running", "10 steps on 2 workers", "/tmp/run",
                                {"start_step": 0, "total_steps": 10, "workers": 2, "plan": PLAN}))  # fmt: skip
    for n in (1, 2, 3):
        step(monitor, n, 0.55, 0.5, 0.87)
    monitor.clock.flush()
    assert monitor.steps.point_count("measured") == monitor.steps.point_count("predicted") == 3
    pen = monitor.steps.series["predicted"][1].opts["pen"]
    assert pen.style() == Qt.PenStyle.DashLine  # the prediction is the dashed line
    drawn = [QColor(c) for c in pixel_near(monitor.steps, 2, 0.5)]  # antialiased: shades of it
    assert any(c.blue() > c.red() + 60 and c.blue() > c.green() + 30 for c in drawn), (
        "the predicted line is not drawn"
    )
    qtbot.waitUntil(lambda: "Step 3" in monitor.figures.full_text(), timeout=2_000)
    text = monitor.figures.full_text()
    assert text.startswith("Plan (auto): all-reduce, exact fp32 gradients, grad_accum 1")
    assert "predicted 0.5 s a step, 2,048 trained tokens/s, 1.60× the fastest Mac alone" in text
    assert "Step 3: 0.55 s measured, 0.5 s predicted (+10%)" in text
    assert "scaling efficiency 87%" in text
    assert "1,000 trained tokens/s (1,400 computed, padding included)" in text
    assert "share of the batch: w0 5, w1 3 sequences" in text

    local = {**PLAN, "local": True, "speedup": 0.93}  # the planner: vs the machine alone
    monitor.on_state(StateEvent("running", "", "/tmp/run", {"plan": local}))
    assert "local processes share this machine's cores" in monitor.figures.full_text()
    assert "0.93× this machine alone in one process" in monitor.figures.full_text()
    assert "fastest" not in monitor.figures.full_text()  # processes are not Macs
    step(monitor, 4, 0.5, 0.5, 0.9, shares=(6.0, 2.0))  # balance re-split the batch
    qtbot.waitUntil(lambda: "w0 6, w1 2" in monitor.figures.full_text(), timeout=2_000)
    monitor.reset(5)  # a new run: nothing of the last one's figures, the same place for them
    assert monitor.figures.isVisible() and monitor.figures.full_text() == ""


def test_without_a_prediction_or_shares_nothing_is_invented(monitor, qtbot) -> None:
    monitor.on_state(StateEvent("running", "", "/tmp/run", {"start_step": 0, "total_steps": 10}))
    step(monitor, 1, 0.3, shares=None)
    monitor.clock.flush()
    assert monitor.steps.point_count("measured") == 1
    assert monitor.steps.point_count("predicted") == 0
    qtbot.waitUntil(lambda: "Step 1" in monitor.figures.full_text(), timeout=2_000)
    text = monitor.figures.full_text()
    assert NO_PREDICTION in text and "efficiency" not in text and "Plan" not in text
    assert "tokens per worker: w0 33%, w1 67%" in text  # no share field: each worker's tokens


def test_a_runs_history_brings_its_predictions(monitor) -> None:
    monitor.on_state(StateEvent("running", "", "/tmp/run",
                                {"start_step": 4, "total_steps": 10, "plan": PLAN}))  # fmt: skip
    rows = [{"step": s, "kind": "train", "step_time_s": 0.6, "predicted_step_s": 0.5,
             "scaling_efficiency": 0.8} for s in (1, 2, 3, 4, 5)]  # fmt: skip
    rows += [{"step": 4, "kind": "worker", "worker": w, "share": 4.0} for w in (0, 1)]
    monitor.load_history(iter(rows))  # a generator, as a reader may hand them
    assert monitor.steps.point_count("predicted") == 4  # step 5 is redone by the resume
    text = monitor.figures.full_text()
    assert "Step 4: 0.6 s measured, 0.5 s predicted (+20%)" in text
    assert "share of the batch: w0 4, w1 4 sequences" in text
