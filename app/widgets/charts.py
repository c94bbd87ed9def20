"""Live pyqtgraph charts that stay smooth with 100k points.

Points go into growable numpy buffers (amortised O(1) append); a timer pushes dirty curves
to pyqtgraph a few times a second, with peak downsampling and clip-to-view, so the cost of
a redraw depends on the pixels on screen, not on the length of the run.

Each redraw paints its chart once. pyqtgraph applies a new auto-range and view transform
lazily, from inside the paint; the changes it makes there schedule a second full paint of
the chart (pyqtgraph issue #7), so a redraw settles the view first. The grid stops at the
minor ticks (the finest level doubled the cost of painting an axis for lines hardly seen),
and the axes keep their rendering in a pixmap, so a chart repainted unchanged (the window
exposed, a page shown) costs a copy.
"""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QPaintEvent, QPen, QResizeEvent
from PySide6.QtWidgets import QGraphicsItem

REDRAW_MS = 100
PAINT_WAIT_S = 0.5  # a redraw whose paint has not come by then no longer holds the next
FAST_DRAW_POINTS = 2000  # above this, thin non-antialiased lines: raster drawPath cost explodes
PALETTE = ["#2e7d32", "#c62828", "#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#5d4037"]

pg.setConfigOptions(antialias=True, background="w", foreground="#333")


class SeriesBuffer:
    """x/y float64 arrays that double when full."""

    def __init__(self, capacity: int = 1024):
        self.x = np.empty(capacity)
        self.y = np.empty(capacity)
        self.n = 0

    def append(self, x: float, y: float) -> None:
        if self.n == len(self.x):
            self.x = np.resize(self.x, 2 * self.n)
            self.y = np.resize(self.y, 2 * self.n)
        self.x[self.n] = x
        self.y[self.n] = y
        self.n += 1

    def extend(self, xs: np.ndarray, ys: np.ndarray) -> None:
        for x, y in zip(xs, ys, strict=True):
            self.append(float(x), float(y))

    def put_before(self, xs: np.ndarray, ys: np.ndarray) -> None:
        """Earlier points (a run's history) go in front of what is here, in x order; those at
        or past the first point already here are left out (the live ones win)."""
        x, y = self.view()
        keep = xs < x[0] if self.n else np.ones(len(xs), dtype=bool)
        self.x = np.concatenate([np.asarray(xs, float)[keep], x, np.empty(len(x) or 16)])
        self.y = np.concatenate([np.asarray(ys, float)[keep], y, np.empty(len(y) or 16)])
        self.n = int(keep.sum()) + len(x)

    def drop_after(self, limit: float) -> None:
        """Forget points past ``limit`` (steps a resumed run will redo)."""
        self.n = int(np.searchsorted(self.x[: self.n], limit, side="right"))

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x[: self.n], self.y[: self.n]

    def clear(self) -> None:
        self.n = 0


class LiveChart(pg.PlotWidget):
    """A titled plot whose named series are appended to and redrawn on a shared timer."""

    painted = Signal(float)  # after a paint that showed new points: the oldest one's wait (s)

    def __init__(
        self,
        title: str,
        y_label: str = "",
        x_label: str = "step",
        log_y: bool = False,
        legend: bool = True,
    ):
        super().__init__()
        self.setTitle(title, size="10pt")
        self.setLabel("bottom", x_label)
        if y_label:
            self.setLabel("left", y_label)
        self.showGrid(x=True, y=True, alpha=0.2)
        for side in ("left", "bottom"):
            axis = self.getAxis(side)
            axis.enableAutoSIPrefix(False)  # no "(x0.001)" tacked onto a unit by pyqtgraph
            # major and minor grid lines, not the finest level; the axis widens for longer
            # labels but never narrows again: each change of width re-lays the plot out and
            # paints the chart a second time (often while labels settle, early in a run)
            axis.setStyle(maxTickLevel=1, autoReduceTextSpace=False)
            axis.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.setLogMode(y=log_y)
        self.setMinimumHeight(160)
        if legend:  # one-series charts say it in the title
            self.legend = self.addLegend(offset=(-10, 10), brush=pg.mkBrush(255, 255, 255, 200))
        self.series: dict[str, tuple[SeriesBuffer, pg.PlotDataItem]] = {}
        self.colors: dict[str, str] = {}
        self.symbols: dict[str, str | None] = {}
        self.dotted: set[str] = set()  # series of one point, shown as a dot (a line needs two)
        self.fast: set[str] = set()  # series drawn thin and aliased (long runs)
        self.dashed: set[str] = set()
        self.dirty: set[str] = set()
        self.last_append: dict[str, float] = {}  # monotonic time of the oldest undrawn point
        self.unpainted: float | None = None  # the same, for points redrawn but not yet painted
        self.paint_s = 0.0  # how long the last paint took
        self.redrawn_at: float | None = None  # monotonic time of a redraw not painted yet

    def add_series(
        self, name: str, color: str | None = None, symbol: str | None = None, dash: bool = False
    ) -> None:
        """``dash``: a dashed line (a prediction beside a measurement)."""
        if name in self.series:
            return
        color = color or PALETTE[len(self.series) % len(PALETTE)]
        if dash:
            self.dashed.add(name)
        item = self.plot(
            [],
            [],
            name=name,
            pen=self._pen(name, color, 2),
            skipFiniteCheck=True,
            symbol=symbol,
            symbolSize=6,
            symbolBrush=color,
            symbolPen=None,
        )
        item.setDownsampling(auto=True, method="peak")
        item.setClipToView(True)
        self.series[name] = (SeriesBuffer(), item)
        self.colors[name] = color
        self.symbols[name] = symbol

    def _pen(self, name: str, color: str, width: int) -> QPen:
        dash = name in self.dashed
        return pg.mkPen(
            color, width=width, style=Qt.PenStyle.DashLine if dash else Qt.PenStyle.SolidLine
        )

    def append(self, name: str, x: float, y: float) -> None:
        if name not in self.series:
            self.add_series(name)
        self.series[name][0].append(x, y)
        self.dirty.add(name)
        self.last_append.setdefault(name, time.monotonic())

    def point_count(self, name: str) -> int:
        return self.series[name][0].n if name in self.series else 0

    def put_history(self, name: str, xs: list[float], ys: list[float]) -> None:
        """A run's earlier points, in front of any live ones already here."""
        if name not in self.series:
            self.add_series(name)
        self.series[name][0].put_before(np.asarray(xs, float), np.asarray(ys, float))
        self.dirty.add(name)
        self.last_append.setdefault(name, time.monotonic())

    def drop_after(self, x: float) -> None:
        for name, (buffer, _item) in self.series.items():
            if buffer.n and buffer.x[buffer.n - 1] > x:
                buffer.drop_after(x)
                self.dirty.add(name)
                self.last_append.setdefault(name, time.monotonic())

    def clear_all(self) -> None:
        """Empty every series and forget the last run's axes (and any zoom the user made)."""
        for name, (buffer, item) in self.series.items():
            buffer.clear()
            if name in self.fast:
                item.setPen(self._pen(name, self.colors[name], 2))
                item.setData([], [], antialias=True)
            else:
                item.setData([], [])
            if name in self.dotted:
                item.setSymbol(self.symbols[name])
        self.fast.clear()
        self.dotted.clear()
        self.dirty.clear()
        self.last_append.clear()
        self.unpainted = None
        self.plotItem.vb.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
        self.plotItem.enableAutoRange()  # setRange turned it off

    def redraw(self) -> None:
        """Push dirty series to pyqtgraph and settle the view; the chart paints them once, at
        the window's next frame (``painted`` says when)."""
        now = time.monotonic()
        for name in self.dirty:
            buffer, item = self.series[name]
            if (buffer.n == 1) != (name in self.dotted) and name not in self.fast:
                # One point has no line to draw: mark it with a dot until a second arrives.
                self.dotted.symmetric_difference_update({name})
                item.setSymbol("o" if buffer.n == 1 else self.symbols[name])
            if buffer.n > FAST_DRAW_POINTS and name not in self.fast:
                self.fast.add(name)  # once: style changes make pyqtgraph rebuild the item
                item.setPen(self._pen(name, self.colors[name], 1))
                item.setSymbol(None)
                item.setData(*buffer.view(), antialias=False)
            else:
                item.setData(*buffer.view())
            first = self.last_append.pop(name, now)
            self.unpainted = first if self.unpainted is None else min(self.unpainted, first)
        self.dirty.clear()
        self.redrawn_at = now
        self._settle()

    def _settle(self) -> None:
        """What the paint would do first (auto-range, the view's transform), done now: changes
        made during a paint schedule another one."""
        if getattr(self, "plotItem", None) is not None:  # None while PlotWidget builds itself
            for _ in range(3):  # a new range re-samples long series, whose bounds may move it
                self.plotItem.vb.prepareForPaint()

    def resizeEvent(self, event: QResizeEvent | None) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._settle()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        start = time.perf_counter()
        super().paintEvent(event)
        self.paint_s = time.perf_counter() - start
        self.redrawn_at = None
        if self.unpainted is not None:
            waited, self.unpainted = time.monotonic() - self.unpainted, None
            self.painted.emit(waited)


class ChartClock(QObject):
    """Redraws a group of charts one at a time, oldest waiting first.

    One chart per frame keeps each GUI slice short (the chart paints at the next frame); the
    tick interval stretches when drawing gets expensive (huge runs, slow machines) so charts
    never take more than about a fifth of the GUI thread. ``drawn`` reports point-to-screen
    delays (used by the bench).
    """

    drawn = Signal(float)  # longest wait, in seconds, of a point a chart's paint showed

    def __init__(
        self, charts: list[LiveChart], interval_ms: int = REDRAW_MS, parent: QObject | None = None
    ):
        super().__init__(parent)
        self.charts = charts
        self.base_ms = max(1, interval_ms // max(1, len(charts)))
        self.timer = QTimer(self)
        self.timer.setInterval(self.base_ms)
        self.timer.timeout.connect(self.tick)
        self.timer.start()
        for chart in charts:
            chart.painted.connect(self.drawn)

    def tick(self) -> None:
        """Draw the chart whose oldest undrawn point has waited longest, once the last one
        drawn is on screen: the window paints every changed chart in one go, so redrawing
        the next before that would add its paint to the same frame."""
        now = time.monotonic()
        if any(c.redrawn_at is not None and now - c.redrawn_at < PAINT_WAIT_S and c.isVisible()
               for c in self.charts):  # fmt: skip
            return
        dirty = [c for c in self.charts if c.dirty]
        if dirty:
            self._draw(
                min(dirty, key=lambda c: min(c.last_append.values(), default=time.monotonic()))
            )

    def _draw(self, chart: LiveChart) -> None:
        start = time.perf_counter()
        chart.redraw()
        cost_s = time.perf_counter() - start + (chart.paint_s if chart.isVisible() else 0.0)
        self.timer.setInterval(max(self.base_ms, int(4000 * cost_s)))

    def flush(self) -> None:
        """Draw every dirty chart now (tests, screenshots)."""
        for chart in self.charts:
            if chart.dirty:
                self._draw(chart)
