"""How responsive the window stays during a real demo run, and how fast metrics reach charts.

A 5 ms QTimer heartbeat records the longest gap the GUI thread leaves between beats while a
demo run trains (2 local workers, started from the window as a user would: the coordinator
runs in the engine process, its events reach the window over the engine's Watch stream),
then while 100,000 extra points per chart stream in through the bridge from another thread.
Each train metric's creation time in the engine (``MetricEvent.time``) is compared with the
moment a chart's paint shows it. Anchors: the targets, 50 ms stall and 250 ms metric-to-chart.
The window runs as ``app/main.py`` runs it (its GUI-thread cycle collector included).

A stall is wall time, so on a shared machine it also holds the time the kernel gave the
GUI thread no CPU at all. ``gui_cpu_max_ms`` on the last line is the GUI thread's own CPU
time in its longest-computing gap: what the app itself spent, whatever the load. An idle
window measured first (``idle_stall_ms``) gives the machine's own noise. ``--trace`` says,
for each stall over 30 ms, what the GUI thread was doing (bench/gui_stall_trace.py).
The engine gets a private folder of its own (``$ORCHARD_ENGINE_DIR``), so a user's engine
is never touched.

``--niceness 0,10`` runs the demo once per ``dist.worker_niceness`` value, one after the
other in the same process (so other load on the machine hits both alike), and prints each
run's stalls and median tokens/s as ratios to the first value's.

    QT_QPA_PLATFORM=offscreen python bench/gui_latency.py [--steps 20] [--flood 100000]
        [--niceness 0,10]
"""

from __future__ import annotations

import argparse
import os
import shutil
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

from engine.config import JobSpec  # noqa: E402
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
        self.busy_by_phase: dict[str, float] = {}
        self.busy: list[float] = []  # the GUI thread's own CPU time in each gap (ms)
        self.cpu = time.thread_time()
        self.trace = None  # a StallTrace (--trace)

    def beat(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        stall = max(0.0, (now - self.last) * 1000 - BEAT_MS)
        if self.armed:
            self.stalls.append(stall)
            busy = (cpu - self.cpu) * 1000
            self.busy.append(busy)
            self.busy_by_phase[self.phase] = max(self.busy_by_phase.get(self.phase, 0.0), busy)
            self.by_phase[self.phase] = max(self.by_phase.get(self.phase, 0.0), stall)
        if self.trace is not None:  # its CPU clocks advance on every beat
            self.trace.beat(self.last, now, stall if self.armed else 0.0, self.phase)
        self.last, self.cpu = now, cpu


def pump(app: QApplication, until, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        app.processEvents()
        time.sleep(0.001)


def descendant_niceness() -> set[int]:
    """Nice values of this process's descendants (the engine process, its workers and their
    job processes); empty off Linux. Shows the setting reached the workers."""
    parent: dict[int, int] = {}
    nice: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parent[pid], nice[pid] = int(fields[1]), int(fields[16])
    mine, found = {os.getpid()}, True
    while found:
        found = False
        for pid, ppid in parent.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                found = True
    return {nice[p] for p in mine if p != os.getpid()}


def engine_gone(folder: Path, timeout_s: float = 30.0) -> None:
    """Wait for the engine process the window started to exit (it was released)."""
    from engine.service.connection import pid_alive, read_connection

    info = read_connection(folder)
    deadline = time.monotonic() + timeout_s
    while info is not None and pid_alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def p(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100)[q - 1] if len(xs) >= 2 else (xs[0] if xs else 0.0)


def demo_run(app: QApplication, w, beat: Heartbeat, delays: list[float], niceness: int) -> dict:
    """One demo run from the window at ``niceness``; its stalls, delays and throughput."""
    w.job.set("dist", "worker_niceness", niceness)
    speeds: list[float] = []
    seen: set[int] = set()
    done = threading.Event()

    def on_metric(e: MetricEvent) -> None:
        if e.kind == "train" and e.step > 1 and "tokens_per_s" in e.values:
            speeds.append(e.values["tokens_per_s"])  # step 1 pays for compiling

    def sample() -> None:  # off the GUI thread: reading /proc is not free
        while not done.wait(1.0):
            seen.update(descendant_niceness())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    w.bridge.metric.connect(on_metric)
    beat.stalls.clear()
    beat.busy.clear()
    beat.by_phase.clear()
    beat.busy_by_phase.clear()
    first = len(delays)
    beat.phase = "starting"
    w.start_run()  # the preflight checks the job on the pool, then the run starts
    pump(app, lambda: w.runner.running or w.training_page.preflight.isVisible(), 120)
    if not w.runner.running:
        raise SystemExit(f"the preflight refused the run: {w.training_page.preflight.text()}")
    beat.armed = True
    t0, cpu0 = time.monotonic(), os.times()
    pump(app, lambda: w.monitor_page.state in ("finished", "failed", "stopped"), 900)
    seconds = time.monotonic() - t0
    cpu1 = os.times()  # the app's own CPU (GUI + the engine stream's thread)
    app_cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / max(seconds, 1e-9)
    beat.armed = False
    done.set()
    sampler.join(5)
    w.bridge.metric.disconnect(on_metric)
    if w.monitor_page.state != "finished":
        raise SystemExit(f"demo run ended {w.monitor_page.state}")
    pump(app, lambda: not w.runner.running, 120)
    return {
        "niceness": niceness,
        "seconds": seconds,
        "stall": max(beat.stalls, default=0.0),
        "busy": max(beat.busy, default=0.0),
        "phases": dict(beat.by_phase),
        "busy_phases": dict(beat.busy_by_phase),
        "delays": delays[first:],
        "tokens_per_s": statistics.median(speeds) if speeds else 0.0,
        "worker_nice": sorted(seen),
        "app_cpu": app_cpu,
        "load": os.getloadavg()[0],
    }


def idle_window(app: QApplication, beat: Heartbeat, seconds: float) -> dict:
    """The same heartbeat with no run: what the machine's load alone costs the GUI thread."""
    beat.stalls.clear()
    beat.phase = "idle"
    beat.armed = True
    t0 = time.monotonic()
    pump(app, lambda: time.monotonic() - t0 >= seconds, seconds + 60)
    beat.armed = False
    return {"stall": max(beat.stalls, default=0.0), "load": os.getloadavg()[0]}


def flood(app: QApplication, w, beat: Heartbeat, delays: list[float], n: int, steps: int) -> dict:
    """Every chart series gets ``n`` more points from a producer thread."""
    beat.stalls.clear()
    beat.busy.clear()
    beat.phase = "flood"
    beat.armed = True
    first = len(delays)
    sink = w.bridge.sink

    def produce() -> None:
        for i in range(n):
            step = steps + 1 + i
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
        app, lambda: not producer.is_alive() and w.monitor_page.loss.point_count("train") >= n, 600
    )
    pump(app, lambda: not w.monitor_page.loss.dirty, 10)
    beat.armed = False
    return {
        "seconds": time.monotonic() - t1,
        "stall": max(beat.stalls, default=0.0),
        "busy": max(beat.busy, default=0.0),
        "delays": delays[first:],
        "load": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--flood", type=int, default=100_000, help="extra points per chart streamed in"
    )
    parser.add_argument(
        "--idle", type=float, default=10.0,
        help="seconds of an idle window measured first: the machine's own scheduling noise",
    )  # fmt: skip
    parser.add_argument(
        "--niceness",
        default=str(JobSpec().dist.worker_niceness),
        help="comma-separated dist.worker_niceness values, one demo run each (first = anchor)",
    )
    parser.add_argument(
        "--trace", action="store_true",
        help="say what the GUI thread did during each stall over 30 ms (bench/gui_stall_trace.py)",
    )  # fmt: skip
    args = parser.parse_args()
    engine_dir = Path(tempfile.mkdtemp(prefix="oe-bench-"))  # short: it holds a Unix socket
    os.environ["ORCHARD_ENGINE_DIR"] = str(engine_dir)
    nicenesses = [int(x) for x in args.niceness.split(",") if x.strip()]
    app = QApplication(sys.argv[:1])
    from app.gc_gui_thread import GuiThreadCollector
    from app.main_window import MainWindow
    from app.settings import AppSettings

    collector = GuiThreadCollector(app)  # as app/main.py: cycles are collected on this thread

    trace = None
    if args.trace:
        from bench.gui_stall_trace import StallTrace, instrument, patch_classes

        trace = StallTrace()
        patch_classes(trace)
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
    if trace is not None:
        instrument(trace, w)
        beat.trace = trace
        trace.start()
    beat.timer.start()
    w.bridge.state.connect(
        lambda e: setattr(beat, "phase", e.state) if e.state in ("preparing", "running") else None
    )
    idle = idle_window(app, beat, args.idle)
    runs = [demo_run(app, w, beat, delays, n) for n in nicenesses]
    flooded = flood(app, w, beat, delays, args.flood, args.steps)
    beat.timer.stop()
    if trace is not None:
        trace.stop()
        print("\n".join(trace.report()))
    w.close()  # no run going: the engine process exits at once
    collector.close()
    engine_gone(engine_dir)
    shutil.rmtree(engine_dir, ignore_errors=True)

    print(
        f"idle window, no run, {args.idle:.0f}s: gui stall max {idle['stall']:.1f} ms, "
        f"load average {idle['load']:.1f} on {os.cpu_count()} cores (the machine's own noise)"
    )
    anchor = runs[0]
    for r in runs:
        phases = ", ".join(
            f"{k} {v:.0f} ms (GUI CPU {r['busy_phases'].get(k, 0):.0f})"
            for k, v in r["phases"].items()
        )
        ratio = (
            f"; vs niceness {anchor['niceness']}: stall {r['stall'] / max(anchor['stall'], 1e-9):.2f}x, "
            f"tokens/s {r['tokens_per_s'] / max(anchor['tokens_per_s'], 1e-9):.2f}x"
            if r is not anchor
            else ""
        )
        print(
            f"demo run, worker niceness {r['niceness']} (engine and workers seen at nice {r['worker_nice'] or '?'}): "
            f"{args.steps} steps in {r['seconds']:.1f}s, load average {r['load']:.1f} on {os.cpu_count()} cores, "
            f"app process {100 * r['app_cpu']:.0f}% of a core"
        )
        print(
            f"  gui stall max {r['stall']:.1f} ms ({r['stall'] / STALL_TARGET_MS:.2f}x the 50 ms target, "
            f"{r['stall'] / max(idle['stall'], 1e-9):.2f}x the idle window's); "
            f"by phase: {phases}; the GUI thread's own CPU in one gap: max {r['busy']:.1f} ms"
        )
        print(
            f"  metric->chart median {p(r['delays'], 50):.0f} ms, max {max(r['delays'], default=0):.0f} ms "
            f"({max(r['delays'], default=0) / CHART_TARGET_MS:.2f}x the 250 ms target); "
            f"median {r['tokens_per_s']:.0f} tokens/s{ratio}"
        )
    print(
        f"flood: {args.flood:,} points x 7 series in {flooded['seconds']:.1f}s, "
        f"load average {flooded['load']:.1f}"
    )
    print(
        f"  gui stall max {flooded['stall']:.1f} ms ({flooded['stall'] / STALL_TARGET_MS:.2f}x target), "
        f"metric->chart p99 {p(flooded['delays'], 99):.0f} ms; "
        f"the GUI thread's own CPU in one gap: max {flooded['busy']:.1f} ms"
    )
    last = runs[-1]
    max_stall = max(last["stall"], flooded["stall"])
    busy = max(last["busy"], flooded["busy"])
    print(
        f"max_stall_ms={max_stall:.1f} metric_to_chart_ms={max(last['delays'], default=0):.1f} "
        f"gui_cpu_max_ms={busy:.1f} idle_stall_ms={idle['stall']:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
