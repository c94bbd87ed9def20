"""How responsive the window stays during a real demo run, and how fast metrics reach charts.

A 5 ms QTimer heartbeat records the longest gap the GUI thread leaves between beats while a
demo run trains (2 local workers, started from the window as a user would), then while
100,000 extra points per chart stream in through the bridge from another thread. Each
train metric's creation time (``MetricEvent.time``) is compared with the moment the chart
timer draws it. Anchors: the targets, 50 ms stall and 250 ms metric-to-chart.

    QT_QPA_PLATFORM=offscreen python bench/gui_latency.py [--steps 20] [--flood 100000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QSettings, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from engine.events import MetricEvent  # noqa: E402

BEAT_MS = 5
STALL_TARGET_MS = 50.0
CHART_TARGET_MS = 250.0


class Heartbeat:
    """Longest wait beyond the beat interval, measured only while ``armed``."""

    def __init__(self) -> None:
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(BEAT_MS)
        self.timer.timeout.connect(self.beat)
        self.last = time.perf_counter()
        self.armed = False
        self.phase = ""
        self.stalls: list[float] = []
        self.by_phase: dict[str, float] = {}

    def beat(self) -> None:
        now = time.perf_counter()
        if self.armed:
            stall = max(0.0, (now - self.last) * 1000 - BEAT_MS)
            self.stalls.append(stall)
            self.by_phase[self.phase] = max(self.by_phase.get(self.phase, 0.0), stall)
        self.last = now


def pump(app: QApplication, until, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        app.processEvents()
        time.sleep(0.001)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--flood", type=int, default=100_000, help="extra points per chart streamed in"
    )
    args = parser.parse_args()
    app = QApplication(sys.argv[:1])
    from app.main_window import MainWindow
    from app.settings import AppSettings

    tmp = Path(tempfile.mkdtemp(prefix="orchard-bench-"))
    w = MainWindow(
        AppSettings(QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat)), discover=False
    )
    w.resize(1280, 860)
    w.show()
    w.job.set("run", "out_dir", str(tmp / "runs"))
    w.job.set("run", "steps", args.steps)
    w.job.set("run", "val_every", max(1, args.steps // 4))
    pump(app, lambda: w.dataset_page.view is not None and w.model_page.info is not None, 300)

    pending: list[float] = []
    delays: list[float] = []
    w.bridge.metric.connect(lambda e: pending.append(e.time) if e.kind == "train" else None)

    def drawn(_wait: float) -> None:
        now = time.time()
        delays.extend((now - t) * 1000 for t in pending)
        pending.clear()

    w.monitor_page.clock.drawn.connect(drawn)
    beat = Heartbeat()
    beat.timer.start()
    w.bridge.state.connect(
        lambda e: setattr(beat, "phase", e.state) if e.state in ("preparing", "running") else None
    )
    beat.phase = "starting"
    w.start_run()
    beat.armed = True
    t0 = time.monotonic()
    pump(app, lambda: w.monitor_page.state in ("finished", "failed", "stopped"), 900)
    run_s = time.monotonic() - t0
    run_stall = max(beat.stalls, default=0.0)
    run_delays = list(delays)
    if w.monitor_page.state != "finished":
        raise SystemExit(f"demo run ended {w.monitor_page.state}")
    pump(app, lambda: not w.runner.running, 120)

    # Flood: every chart series gets ``--flood`` more points from a producer thread.
    beat.stalls.clear()
    beat.phase = "flood"
    sink = w.bridge.sink

    def produce() -> None:
        for i in range(args.flood):
            step = args.steps + 1 + i
            sink(
                MetricEvent(
                    step,
                    {
                        "train_loss": 2.0 + (i % 97) / 100,
                        "learning_rate": 1e-4,
                        "tokens_per_s": 1000.0 + i % 50,
                        "grad_norm": 1.0,
                    },
                )
            )
            sink(MetricEvent(step, {"compute_s": 0.5, "comm_s": 0.05}, kind="worker", worker=0))
            if i % 2000 == 1999:
                time.sleep(0.01)  # a very fast run, not a single burst

    producer = threading.Thread(target=produce)
    t1 = time.monotonic()
    producer.start()
    pump(
        app,
        lambda: not producer.is_alive() and w.monitor_page.loss.point_count("train") >= args.flood,
        600,
    )
    pump(app, lambda: not w.monitor_page.loss.dirty, 10)
    flood_s = time.monotonic() - t1
    flood_stall = max(beat.stalls, default=0.0)
    flood_delays = delays[len(run_delays) :]
    beat.timer.stop()
    w.close()

    def p(xs: list[float], q: float) -> float:
        return statistics.quantiles(xs, n=100)[q - 1] if len(xs) >= 2 else (xs[0] if xs else 0.0)

    print(f"demo run: {args.steps} steps in {run_s:.1f}s, {len(run_delays)} train points")
    phases = ", ".join(f"{k} {v:.0f} ms" for k, v in beat.by_phase.items() if k != "flood")
    print(
        f"  gui stall max {run_stall:.1f} ms ({run_stall / STALL_TARGET_MS:.2f}x the 50 ms target); "
        f"by phase: {phases}"
    )
    print(f"  load average during the bench: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"  metric->chart median {p(run_delays, 50):.0f} ms, max {max(run_delays, default=0):.0f} ms "
        f"({max(run_delays, default=0) / CHART_TARGET_MS:.2f}x the 250 ms target)"
    )
    print(f"flood: {args.flood:,} points x 7 series in {flood_s:.1f}s")
    print(
        f"  gui stall max {flood_stall:.1f} ms ({flood_stall / STALL_TARGET_MS:.2f}x target), "
        f"metric->chart p99 {p(flood_delays, 99):.0f} ms"
    )
    max_stall = max(run_stall, flood_stall)
    print(f"max_stall_ms={max_stall:.1f} metric_to_chart_ms={max(run_delays, default=0):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
