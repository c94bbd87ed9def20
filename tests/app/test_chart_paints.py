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


def test_a_long_series_settles_at_every_length(qtbot) -> None:
    """pyqtgraph's own downsampling chose its block size from the view's width while the
    auto-range chose the view from the downsampled points: at some lengths they never agreed,
    and each paint moved the range and scheduled the next, forever (a frozen window). Every
    length must settle after one redraw: more layout passes leave the view where it is."""
    import numpy as np

    from app.widgets.charts import LiveChart

    chart = LiveChart("Loss", "loss")
    qtbot.addWidget(chart)
    chart.add_series("train")
    chart.resize(350, 280)
    chart.show()
    qtbot.waitExposed(chart)
    n_max = 110_000
    buffer = chart.series["train"][0]
    buffer.x = np.arange(1, n_max + 1, dtype=float)
    buffer.y = 2.0 + (np.arange(n_max) % 97) / 100
    vb = chart.plotItem.vb
    moving = []
    for n in range(2_000, n_max, 17):  # the old code moved at 8 of these lengths
        buffer.n = n
        chart.dirty.add("train")
        chart.redraw()
        before = vb.viewRange()[0]
        seen = {tuple(before)}
        for _ in range(6):
            vb.prepareForPaint()
            seen.add(tuple(vb.viewRange()[0]))
        if len(seen) > 1:
            moving.append(n)
    assert not moving, f"the view kept moving at {len(moving)} lengths, e.g. {moving[:3]}"
    (x0, x1), _ = vb.viewRange()
    assert x0 <= 1 and x1 >= n  # the whole run shows


def test_peak_downsample_keeps_the_bounds_and_every_peak() -> None:
    import numpy as np

    from app.widgets.charts import peak_downsample

    rng = np.random.default_rng(0)
    for n in (10, 999, 1000, 1001, 4096, 50_001):
        x = np.arange(n, dtype=float) * 0.5 + 3
        y = rng.normal(size=n)
        y[n // 3] = 50.0  # a spike anywhere survives
        sx, sy = peak_downsample(x, y, 1000)
        if n <= 1000:
            assert sx is x and sy is y
            continue
        assert len(sx) <= 1000 + 4 * n // 1000 + 1  # the blocks' peaks, then a short tail
        assert sx[0] == x[0] and sx[-1] == x[-1]
        assert sy.max() == y.max() and sy.min() == y.min()
        assert np.all(np.diff(sx) >= 0)
    # a growing run keeps its blocks until it doubles: the drawn shape does not shimmer
    x = np.arange(3000, dtype=float)
    a = peak_downsample(x, np.sin(x), 1000)[1]
    b = peak_downsample(x[:2900], np.sin(x[:2900]), 1000)[1]
    assert np.array_equal(a[:700], b[:700])  # 2 x 362 whole blocks of 8 in both


def test_a_zoom_redraws_what_shows_finely_and_auto_range_brings_all_back(chart, qtbot) -> None:
    import numpy as np

    for step in range(21, 50_001):
        chart.series["train"][0].append(step, float(step % 100))
    chart.dirty.add("train")
    chart.redraw()
    item = chart.series["train"][1]
    assert len(item.xData) < 4_000  # the whole run, downsampled
    vb = chart.plotItem.vb
    vb.setXRange(1_000, 1_200, padding=0)  # what a mouse zoom does: x auto-range goes off
    assert chart.dirty  # the view asks for a redraw at its new zoom
    chart.redraw()
    x = item.xData
    assert x[0] <= 1_000 and x[-1] >= 1_200 and len(x) < 260  # the window's points, each one
    assert np.array_equal(np.diff(x), np.ones(len(x) - 1))
    vb.enableAutoRange()  # pyqtgraph's "A" button
    assert chart.dirty
    chart.redraw()
    vb.prepareForPaint()
    (x0, x1), _ = vb.viewRange()
    assert x0 <= 1 and x1 >= 50_000


def test_a_page_of_charts_comes_up_one_chart_per_tick(qtbot) -> None:
    """Showing a pyqtgraph view paints it two or three times in one event-loop pass: a page
    of six charts shown at once made the longest GUI stall of a run's start. They appear one
    per clock tick instead, each keeping its place in the layout meanwhile."""
    from PySide6.QtWidgets import QGridLayout, QLabel, QStackedWidget, QWidget

    from app.widgets.charts import ChartClock, LiveChart

    class Page(QWidget):
        def showEvent(self, event) -> None:  # noqa: N802 - Qt override
            if not event.spontaneous():
                clock.reveal()
            super().showEvent(event)

    stack = QStackedWidget()
    qtbot.addWidget(stack)
    stack.addWidget(QLabel("another page"))
    page = Page()
    grid = QGridLayout(page)
    charts = [LiveChart(f"chart {i}") for i in range(4)]
    for i, chart in enumerate(charts):
        grid.addWidget(chart, i // 2, i % 2)
    clock = ChartClock(charts, interval_ms=60_000)  # ticks only when called here
    stack.addWidget(page)
    stack.resize(700, 500)
    stack.show()
    qtbot.waitExposed(stack)
    stack.setCurrentWidget(page)
    assert [c.isVisible() for c in charts] == [False] * 4
    places = [c.geometry() for c in charts]
    clock.tick()
    assert [c.isVisible() for c in charts] == [True, False, False, False]
    assert [c.geometry() for c in charts] == places  # nothing moved as the first appeared
    clock.flush()  # screenshots and tests: everything at once
    assert all(c.isVisible() for c in charts)
    stack.setCurrentIndex(0)
    stack.setCurrentWidget(page)
    assert not any(c.isVisible() for c in charts)  # every time the page comes up
    clock.tick()
    stack.setCurrentIndex(0)  # left before every chart came up, then back
    stack.setCurrentWidget(page)
    for _ in charts:
        clock.tick()
    assert all(c.isVisible() for c in charts)
