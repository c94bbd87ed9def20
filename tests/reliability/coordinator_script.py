"""An engine process for the coordinator-death test: start_run on the demo with 2 local workers.

Usage: coordinator_script.py <out_dir> <cache_dir> <steps> <checkpoint_every> <hold_at>.
Prints WORKERS=<pids> once the workers are up, then STEP=<n> LOSS=<x> after every step. After
step <hold_at> the run thread is held in its event callback, so the test kills it at a known
point however fast steps are (no race against the next checkpoint).
"""

import sys
import threading
import time
from pathlib import Path

from engine.events import MetricEvent
from engine.runtime import start_run
from tests.runtime.helpers import tiny_job

out, cache = Path(sys.argv[1]), Path(sys.argv[2])
steps, every, hold_at = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
steps_done: list[tuple[int, float]] = []
first = threading.Event()


def sink(event: object) -> None:
    if isinstance(event, MetricEvent) and event.kind == "train":
        steps_done.append((event.step, event.values["train_loss"]))
        first.set()
        if event.step == hold_at:
            threading.Event().wait()  # until the kill


job = tiny_job(out, steps=steps, **{"dist.workers": 2, "run.checkpoint_every": every,
                                    "run.keep_checkpoints": 3, "run.name": "killed"})  # fmt: skip
handle = start_run(job, sink, data_dir=cache)
while not first.wait(0.2):
    if not handle.is_alive():
        sys.exit(f"run ended early: {handle.result}")
print("WORKERS=" + ",".join(str(w.pid) for w in handle._coordinator.cluster.local), flush=True)
printed = 0
while handle.wait(0.05) is None:
    while printed < len(steps_done):
        step, loss = steps_done[printed]
        print(f"STEP={step} LOSS={loss!r}", flush=True)
        printed += 1
    time.sleep(0.01)
print("STATUS=" + handle.result.status, flush=True)
