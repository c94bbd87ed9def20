"""The CLI's way to run a job, for the signal tests: Ctrl-C asks the run to stop.

Usage: run_script.py <out_dir> <cache_dir>. Prints WORKERS=<pids> once training runs.
"""

import signal
import sys
import threading
import time
from pathlib import Path

from engine.events import MetricEvent
from engine.runtime import start_run
from tests.runtime.helpers import tiny_job

out, cache = Path(sys.argv[1]), Path(sys.argv[2])
stop = threading.Event()
signal.signal(signal.SIGINT, lambda *_: stop.set())
first_step = threading.Event()


def sink(event):
    if isinstance(event, MetricEvent) and event.kind == "train":
        first_step.set()


handle = start_run(tiny_job(out, steps=100_000, **{"dist.workers": 2}), sink, stop, data_dir=cache)
while not first_step.wait(0.2):
    if not handle.is_alive():
        sys.exit(f"run ended early: {handle.result}")
pids = [w.pid for w in handle._coordinator.cluster.local]
print("WORKERS=" + ",".join(map(str, pids)), flush=True)
while handle.wait(0.2) is None:
    time.sleep(0.01)
print("STATUS=" + handle.result.status, flush=True)
