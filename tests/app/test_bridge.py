"""Metric events cross the bridge unchanged, and a backlog of them costs the GC nothing."""

from __future__ import annotations

import gc
import threading

from app.bridge import EngineBridge
from engine.events import LogEvent, MetricEvent


def test_events_arrive_unchanged_and_in_order(qtbot) -> None:
    bridge = EngineBridge()
    got: list[object] = []
    bridge.metric.connect(got.append)
    bridge.log.connect(got.append)
    sent = [
        MetricEvent(1, {"train_loss": 2.5, "tokens_per_s": 900}),
        LogEvent("info", "between"),
        MetricEvent(1, {"compute_s": 0.5}, kind="worker", worker=3),
        MetricEvent(2, {}, kind="val"),
    ]
    threading.Thread(target=lambda: [bridge.sink(e) for e in sent]).start()
    qtbot.waitUntil(lambda: len(got) == len(sent), timeout=5_000)
    assert got == sent  # dataclass equality: step, values, kind, worker and creation time


def test_a_metric_backlog_is_not_tracked_by_the_cycle_collector(qtbot) -> None:
    bridge = EngineBridge()
    before = gc.get_count()[0]
    for i in range(10_000):  # queued, not drained: the GUI thread is busy in this test
        bridge.sink(MetricEvent(i, {"train_loss": 1.0, "grad_norm": 0.5}))
    # untracked from the start: no collection (they run on the GUI thread) has to walk them
    grown = gc.get_count()[0] - before  # tracked objects made and still alive
    tracked = sum(gc.is_tracked(item) for item in bridge._queue)
    assert bridge.pending() == 10_000 and tracked == 0 and grown < 1_000
    got: list[MetricEvent] = []
    bridge.metric.connect(got.append)
    qtbot.waitUntil(lambda: len(got) == 10_000, timeout=30_000)
    assert [e.step for e in got] == list(range(10_000))


def test_the_loaded_heap_is_kept_out_of_the_collector(window, qtbot) -> None:
    # The window freezes what is loaded once the runtime import finishes (once per process).
    qtbot.waitUntil(lambda: gc.get_freeze_count() > 10_000, timeout=60_000)
