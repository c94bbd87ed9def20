"""An engine process for the coordinator-death test: start_run on the demo with 2 local workers.

Usage: coordinator_script.py <out_dir> <cache_dir> <steps> <checkpoint_every> <hold_at> [go]
Prints WORKERS=<pids> and PORTS=<ports> once the workers are up, then STEP=<n> LOSS=<x> after
every step. After step <hold_at> the run thread is held in its event callback, so the test
kills it at a known point however fast steps are (no race against the next checkpoint). With
"go", the hold ends when the line "go" arrives on stdin (the test first freezes a worker, so
the next step stops inside its collective); a recovery then prints RECOVERING.
"""

import sys
import threading
import time
from pathlib import Path

from engine.events import MetricEvent, StateEvent
from engine.runtime import start_run
from tests.runtime.helpers import tiny_job

out, cache = Path(sys.argv[1]), Path(sys.argv[2])
steps, every, hold_at = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
release = sys.argv[6:] == ["go"]
steps_done: list[tuple[int, float]] = []
first, go = threading.Event(), threading.Event()


def sink(event: object) -> None:
    if isinstance(event, MetricEvent) and event.kind == "train":
        steps_done.append((event.step, event.values["train_loss"]))
        first.set()
        if event.step == hold_at and not go.is_set():
            if not release:
                threading.Event().wait()  # until the kill
            go.wait(300)  # the test says "go" within seconds, then kills this process
    elif isinstance(event, StateEvent) and event.state == "recovering":
        print("RECOVERING " + event.message, flush=True)


def read_go() -> None:
    for line in sys.stdin:
        if line.strip() == "go":
            go.set()


# an equal split: a re-split recompiles, and a longer step 4 can make the in-memory snapshot
# after it due, whose GetState then waits on the frozen worker (a recovery, not the kill)
job = tiny_job(out, steps=steps, **{"dist.workers": 2, "run.checkpoint_every": every,
                                    "run.keep_checkpoints": 3, "run.name": "killed",
                                    "dist.balance": "equal"})  # fmt: skip
if release:
    threading.Thread(target=read_go, daemon=True).start()
handle = start_run(job, sink, data_dir=cache)
while not first.wait(0.2):
    if not handle.is_alive():
        sys.exit(f"run ended early: {handle.result}")
local = handle._coordinator.cluster.local
print("WORKERS=" + ",".join(str(w.pid) for w in local), flush=True)
print("PORTS=" + ",".join(str(w.port) for w in local), flush=True)
printed = 0
while handle.wait(0.05) is None:
    while printed < len(steps_done):
        step, loss = steps_done[printed]
        print(f"STEP={step} LOSS={loss!r}", flush=True)
        printed += 1
    time.sleep(0.01)
print("STATUS=" + handle.result.status, flush=True)
