"""A live chart paints once per redraw and once per resize (pyqtgraph's lazy auto-range used
to schedule a second full paint of the chart from inside the first)."""

from __future__ import annotations

import pytest


@pytest.fixture
def chart(qtbot):
    from app.widgets.charts import LiveChart

    class Counted(LiveChart):
        def __init__(self) -> None:
            super().__init__("Loss", "loss")
            self.paints = 0

        def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
            self.paints += 1
            super().paintEvent(event)

    c = Counted()
    qtbot.addWidget(c)
    c.add_series("train")
    c.resize(340, 270)
    c.show()
    qtbot.waitExposed(c)
    for step in range(1, 21):
        c.append("train", step, 3.0 - step / 10)
    c.redraw()
    qtbot.wait(50)
    return c


def test_a_new_point_is_painted_once(chart, qtbot) -> None:
    seen: list[float] = []
    chart.painted.connect(seen.append)
    for step in range(21, 26):  # each point moves the auto-ranged axes
        chart.paints = 0
        chart.append("train", step, 1.0 + step % 3)
        chart.redraw()
        qtbot.wait(40)
        assert chart.paints == 1
    assert len(seen) == 5 and all(0 <= s < 5 for s in seen)  # the wait of each shown point
    (x0, x1), (y0, y1) = chart.plotItem.vb.viewRange()
    assert x1 >= 25 and y1 >= 3  # the view followed the points


def test_a_resize_is_painted_once(chart, qtbot) -> None:
    for height in (300, 260, 320):
        chart.paints = 0
        chart.resize(340, height)
        qtbot.wait(40)
        assert chart.paints == 1


def test_the_clock_draws_the_next_chart_once_the_last_is_on_screen(qtbot) -> None:
    """The window paints every changed chart in one frame: redrawing a second chart before
    the first is painted would stack their paints into one long stall."""
    from PySide6.QtWidgets import QHBoxLayout, QWidget

    from app.widgets.charts import ChartClock, LiveChart

    host = QWidget()
    qtbot.addWidget(host)
    row = QHBoxLayout(host)
    charts = [LiveChart(name) for name in ("a", "b")]
    for chart in charts:
        row.addWidget(chart)
    clock = ChartClock(charts, interval_ms=60_000)  # ticks only when called here
    host.resize(700, 300)
    host.show()
    qtbot.waitExposed(host)
    for chart in charts:
        chart.append("s", 1, 1.0)
        chart.append("s", 2, 2.0)
    clock.tick()
    clock.tick()  # the first chart's paint has not come yet: nothing more is drawn
    assert [bool(c.dirty) for c in charts] == [False, True]
    qtbot.waitUntil(lambda: charts[0].redrawn_at is None, timeout=2_000)  # painted
    clock.tick()
    assert not charts[1].dirty
