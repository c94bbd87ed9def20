"""What the GUI thread was doing during each long heartbeat gap (``gui_latency.py --trace``).

Four cheap witnesses, read together for every stall over ``STALL_MS``:

- CPU clocks at each beat: the GUI thread's own CPU time and the whole process's over the
  gap. GUI CPU close to the gap: the GUI thread computed. Process CPU without GUI CPU: another
  thread of the app held the GIL. Neither: the kernel did not run the process (machine load).
- ``gc.callbacks``: each collection's generation, duration and thread.
- A sampler thread (every ``SAMPLE_MS``) that records the GUI thread's innermost Python
  frames (a frame stuck in ``processEvents`` means Qt's own C++: layout, painting a widget)
  and how the kernel sees it (Linux: ``[R running]`` waits for a CPU, ``[S futex]`` for a
  lock or the GIL, ``[D fdatasync]`` for the disk).
- Timers around the app's GUI-thread entry points: the bridge's drain, each chart redraw,
  paint and resize (with the app code that caused it), the Monitor's figures line and slots.
"""

from __future__ import annotations

import collections
import gc
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

STALL_MS = 30.0
SAMPLE_MS = 2.0
DEPTH = 6  # innermost frames kept per sample


class StallTrace:
    def __init__(self) -> None:
        self.gui_ident = threading.get_ident()
        self.gui_native_id = threading.get_native_id()
        self.samples: collections.deque[tuple[float, tuple[str, ...]]] = collections.deque(
            maxlen=4000
        )
        self.gcs: collections.deque[tuple[float, float, int, str, int]] = collections.deque(
            maxlen=4000
        )
        self.spans: collections.deque[tuple[float, float, str]] = collections.deque(maxlen=20000)
        self.stalls: list[dict[str, Any]] = []
        self.gc_totals: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._gc_start: dict[int, float] = {}
        self._done = threading.Event()
        self._lock = threading.RLock()  # the sampler and collections in any thread append
        self._sampler = threading.Thread(target=self._sample, name="stall-sampler", daemon=True)
        self.last_cpu = (time.thread_time(), time.process_time())

    # witnesses ----------------------------------------------------------------------------------
    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._sampler.start()

    def stop(self) -> None:
        self._done.set()
        self._sampler.join(2)
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        ident = threading.get_ident()
        if phase == "start":
            self._gc_start[ident] = time.perf_counter()
            return
        t0 = self._gc_start.pop(ident, None)
        if t0 is None:
            return
        t1 = time.perf_counter()
        where = "gui" if ident == self.gui_ident else threading.current_thread().name
        with self._lock:
            self.gcs.append((t0, t1, info["generation"], where, info.get("collected", 0)))
        self.gc_totals[info["generation"]].append((t1 - t0) * 1000)

    def _sample(self) -> None:
        task = f"/proc/self/task/{self.gui_native_id}"
        while not self._done.wait(SAMPLE_MS / 1000):
            frame = sys._current_frames().get(self.gui_ident)
            names = [_kernel_state(task)]
            while frame is not None and len(names) < DEPTH:
                code = frame.f_code
                names.append(
                    f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_name}:{frame.f_lineno}"
                )
                frame = frame.f_back
            with self._lock:
                self.samples.append((time.perf_counter(), tuple(names)))

    def timed(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with its GUI-thread time recorded under ``label``."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spans.append((t0, time.perf_counter(), label))

        return wrapper

    def _copy(self, items: collections.deque) -> list:
        with self._lock:
            return list(items)

    # at each beat -------------------------------------------------------------------------------
    def beat(self, start: float, end: float, stall_ms: float, phase: str) -> None:
        cpu = (time.thread_time(), time.process_time())
        gui_cpu = (cpu[0] - self.last_cpu[0]) * 1000
        proc_cpu = (cpu[1] - self.last_cpu[1]) * 1000
        self.last_cpu = cpu
        if stall_ms < STALL_MS:
            return

        def inside(t0: float, t1: float) -> bool:
            return t1 >= start and t0 <= end

        frames = collections.Counter(
            s for t, s in self._copy(self.samples) if start <= t <= end
        )  # a copy: the sampler appends
        self.stalls.append(
            {
                "phase": phase,
                "gap_ms": (end - start) * 1000,
                "stall_ms": stall_ms,
                "gui_cpu_ms": gui_cpu,
                "proc_cpu_ms": proc_cpu,
                "gcs": [
                    (g, where, (t1 - t0) * 1000, n)
                    for t0, t1, g, where, n in self._copy(self.gcs)
                    if inside(t0, t1)
                ],
                "spans": [
                    (label, (t1 - t0) * 1000) for t0, t1, label in self.spans if inside(t0, t1)
                ],
                "frames": frames.most_common(4),
                "samples": sum(frames.values()),
            }
        )

    # report -------------------------------------------------------------------------------------
    def report(self) -> list[str]:
        lines = [f"trace: {len(self.stalls)} stalls over {STALL_MS:.0f} ms"]
        for g, times in self.gc_totals.items():
            if times:
                lines.append(
                    f"  gc gen {g}: {len(times)} collections, max {max(times):.1f} ms, "
                    f"total {sum(times):.0f} ms"
                )
        for s in self.stalls:
            lines.append(
                f"- {s['phase']}: stall {s['stall_ms']:.0f} ms; GUI thread CPU {s['gui_cpu_ms']:.0f} ms,"
                f" process CPU {s['proc_cpu_ms']:.0f} ms, {s['samples']} samples"
            )
            for g, where, ms, n in s["gcs"]:
                lines.append(f"    gc gen {g} on {where}: {ms:.1f} ms ({n} collected)")
            spans = collections.defaultdict(lambda: [0, 0.0])
            for label, ms in s["spans"]:
                spans[label][0] += 1
                spans[label][1] += ms
            for label, (n, ms) in sorted(spans.items(), key=lambda kv: -kv[1][1])[:6]:
                lines.append(f"    {label}: {n}x, {ms:.1f} ms")
            for names, n in s["frames"]:
                lines.append(f"    {n}x " + " < ".join(names))
        return lines


SYSCALLS = {0: "read", 1: "write", 7: "poll", 23: "select", 35: "nanosleep", 74: "fsync",
            75: "fdatasync", 202: "futex", 230: "clock_nanosleep", 232: "epoll_wait",
            271: "ppoll", 281: "epoll_pwait"}  # x86-64  # fmt: skip


def _kernel_state(task: str) -> str:
    """The GUI thread as the kernel sees it: R (running or waiting for a CPU) or S, and the
    system call it waits in (Linux only)."""
    try:
        with open(f"{task}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"{task}/syscall") as f:
            call = f.read().split()[0]
    except OSError:
        return "?"
    name = SYSCALLS.get(int(call), call) if call.lstrip("-").isdigit() else call
    return f"[{state} {name}]"


def patch_classes(trace: StallTrace) -> None:
    """Before the window exists: time every chart's paint (pyqtgraph's ``GraphicsView.
    paintEvent`` is a Python override, so a class attribute reaches Qt's virtual call)."""
    from app.widgets.charts import LiveChart

    paint = LiveChart.paintEvent

    def timed_paint(chart: Any, event: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return paint(chart, event)
        finally:
            trace.spans.append((t0, time.perf_counter(), f"paint {getattr(chart, 'name', '?')}"))

    LiveChart.paintEvent = timed_paint
    resize = LiveChart.resizeEvent

    def traced_resize(chart: Any, event: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return resize(chart, event)
        finally:  # who asked: the innermost frames of the app's own code, if any
            frame, why = sys._getframe(1), []
            while frame is not None and len(why) < 3:
                name = frame.f_code.co_filename
                if "/app/" in name:
                    why.append(f"{name.rsplit('/', 1)[-1]}:{frame.f_code.co_name}")
                frame = frame.f_back
            sizes = ""
            if event is not None:
                old, new = event.oldSize(), event.size()
                sizes = f"{old.width()}x{old.height()}->{new.width()}x{new.height()} "
            trace.spans.append(
                (t0, time.perf_counter(), f"resize {sizes}by {' < '.join(why) or 'Qt'}")
            )

    LiveChart.resizeEvent = traced_resize


def instrument(trace: StallTrace, w: Any) -> None:
    """Time the window's GUI-thread entry points (instance attributes shadow the methods; the
    signals connected before this are re-pointed)."""
    from PySide6.QtCore import Qt

    bridge = w.bridge
    drain = trace.timed("bridge drain", bridge._drain)
    bridge._wake.disconnect()
    bridge._drain = drain
    bridge._wake.connect(drain, Qt.ConnectionType.QueuedConnection)
    page = w.monitor_page
    for chart in page.charts:
        chart.name = chart.plotItem.titleLabel.text
        chart.redraw = trace.timed(f"redraw {chart.name}", chart.redraw)
    page._figures_timer.timeout.disconnect()
    page._figures_timer.timeout.connect(trace.timed("figures refresh", page.figures.refresh))
    for sig, slot, label in (
        (bridge.metric, page.on_metric, "on_metric"),
        (bridge.progress, page.on_progress, "on_progress"),
        (bridge.state, page.on_state, "on_state"),
        (bridge.log, page.append_log, "append_log"),
    ):
        sig.disconnect(slot)
        sig.connect(trace.timed(label, slot))
