"""Live pyqtgraph charts that stay smooth with 100k points.

Points go into growable numpy buffers (amortised O(1) append); a timer pushes dirty curves
to pyqtgraph a few times a second, peak-downsampled to the chart's width (and cut to the view
when the user zoomed), so the cost of a redraw depends on the pixels on screen, not on the
length of the run.

The downsampling is ours, not pyqtgraph's: pyqtgraph's automatic one picks its block size from
the view's width, and the auto-range picks the view from the downsampled points' bounds. At
some lengths (about 1 in 700 over 2k-110k points) the two never agree: each paint moved the
range, which scheduled the next paint, and the GUI thread painted that chart forever inside
one event-loop pass (a frozen window, seen in bench/gui_latency.py's flood). Here the first
and last points are kept exactly and every block's highest and lowest, so the bounds do not
depend on the block size and nothing feeds back.

Each redraw paints its chart once. pyqtgraph applies a new auto-range and view transform
lazily, from inside the paint; the changes it makes there schedule a second full paint of
the chart (pyqtgraph issue #7), so a redraw settles the view first. The grid stops at the
minor ticks (the finest level doubled the cost of painting an axis for lines hardly seen),
and the axes keep their rendering in a pixmap, so a chart repainted unchanged (the window
exposed, a page shown) costs a copy.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QPaintEvent, QPen, QResizeEvent
from PySide6.QtWidgets import QGraphicsItem

REDRAW_MS = 100
PAINT_WAIT_S = 0.5  # a redraw whose paint has not come by then no longer holds the next
FAST_DRAW_POINTS = 2000  # above this, thin non-antialiased lines: raster drawPath cost explodes
MIN_SHOWN_POINTS = 512  # a chart narrower than this many half-pixels still gets this many
PALETTE = ["#2e7d32", "#c62828", "#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#5d4037"]

pg.setConfigOptions(antialias=True, background="w", foreground="#333")


def peak_downsample(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``max_points`` points that draw like all of them at that width: each block
    of points becomes its highest and its lowest value (at the block's first x), and the points
    after the last whole block stay as they are. The first and last points are kept exactly,
    so the curve's bounds do not depend on the block size; blocks are a power of two long, so
    a growing run changes them only each time it doubles."""
    n = len(x)
    if n <= max_points:
        return x, y
    ds = 1 << max(1, math.ceil(math.log2(2 * n / max(max_points, 2))))
    blocks = n // ds
    head = blocks * ds
    ys = y[:head].reshape(blocks, ds)
    peaks = np.empty(2 * blocks)
    peaks[0::2] = ys.max(axis=1)
    peaks[1::2] = ys.min(axis=1)
    tail = slice(head, n) if head < n else slice(n - 1, n)  # the newest point, always
    return (np.concatenate([np.repeat(x[:head:ds], 2), x[tail]]),
            np.concatenate([peaks, y[tail]]))  # fmt: skip


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
        self.shown_window: tuple[float, float] | None = None  # x range the data was cut to
        self.plotItem.vb.sigStateChanged.connect(self._view_changed)

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
        self.shown_window = None
        self.plotItem.vb.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
        self.plotItem.enableAutoRange()  # setRange turned it off

    def _view_changed(self, _view: object = None) -> None:
        """The user zoomed or panned (or pressed pyqtgraph's auto-range button): the series are
        cut and downsampled again for what the view now shows. An auto-ranged view changes
        nothing here (all points are shown at every range), so no change feeds back."""
        if self._wanted_window() != self.shown_window:
            for name, (buffer, _item) in self.series.items():
                if buffer.n:
                    self.dirty.add(name)
                    self.last_append.setdefault(name, time.monotonic())

    def _wanted_window(self) -> tuple[float, float] | None:
        vb = self.plotItem.vb
        if vb.autoRangeEnabled()[0]:
            return None
        left, right = vb.viewRange()[0]
        return float(left), float(right)

    def _shown(self, buffer: SeriesBuffer) -> tuple[np.ndarray, np.ndarray]:
        """The points to hand pyqtgraph: those in the view's x window (all, while it follows
        the data) with one beyond each side, downsampled to about two per pixel."""
        x, y = buffer.view()
        if self.shown_window is not None:
            left, right = self.shown_window
            i0 = max(0, int(np.searchsorted(x, left)) - 1)
            i1 = min(len(x), int(np.searchsorted(x, right, side="right")) + 1)
            x, y = x[i0:i1], y[i0:i1]
        width = self.plotItem.vb.width()
        return peak_downsample(x, y, max(MIN_SHOWN_POINTS, int(2 * width)))

    def redraw(self) -> None:
        """Push dirty series to pyqtgraph and settle the view; the chart paints them once, at
        the window's next frame (``painted`` says when)."""
        now = time.monotonic()
        window = self._wanted_window()
        if window != self.shown_window:  # every series is cut to the same window
            self.shown_window = window
            self.dirty.update(name for name, (b, _i) in self.series.items() if b.n)
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
                item.setData(*self._shown(buffer), antialias=False)
            else:
                item.setData(*self._shown(buffer))
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
        self.unrevealed: list[LiveChart] = []

    def reveal(self) -> None:
        """The charts are about to be shown (their page comes up): they appear one per tick
        instead of all in the frame that shows the page. Showing a pyqtgraph view paints it
        two or three times over in one event-loop pass (its scene settles after the first),
        so six charts made that frame 20-30 ms longer, the longest GUI stall of a run's start."""
        self.unrevealed = list(self.charts)  # those still hidden from a page left early too
        self.timer.setInterval(self.base_ms)  # not a slow redraw's stretched interval
        for chart in self.unrevealed:
            policy = chart.sizePolicy()
            policy.setRetainSizeWhenHidden(True)  # the others keep their place meanwhile
            chart.setSizePolicy(policy)
            chart.hide()

    def tick(self) -> None:
        """Draw the chart whose oldest undrawn point has waited longest, once the last one
        drawn is on screen: the window paints every changed chart in one go, so redrawing
        the next before that would add its paint to the same frame."""
        if self.unrevealed:
            self.unrevealed.pop(0).show()
            return
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
        """Show and draw every chart now (tests, screenshots)."""
        while self.unrevealed:
            self.unrevealed.pop(0).show()
        for chart in self.charts:
            if chart.dirty:
                self._draw(chart)
