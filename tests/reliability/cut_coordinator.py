"""The coordinator of the cut-link test, run inside a network namespace.

python -m tests.reliability.cut_coordinator --out DIR --mode MODE --steps N --hold-at K
    --every E --step-timeout S HOST=CODE [HOST=CODE ...]

Pairs with each `orchard worker` using the code read from its terminal, then trains over all
of them (dist.hosts) and prints one JSON line per event, each stamped with wall time "t":
  {"paired": HOST, "rc": 0}                 one per host
  {"step": n, "loss": x, "t": ...}          every training step
  {"held": K, "t": ...}                     after step K the run thread waits for "go" on stdin
  {"state": ..., "detail": {...}, "t": ...} every StateEvent (recovering, running, ...)
  {"result": status, "losses": [...], "adapter": bool, "message": ..., "t": ...}  at the end
The hold lets the test cut the link at a known point, however fast the steps are.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

_lock = threading.Lock()
HOLD_LIMIT_S = 120.0  # the test sends "go" within seconds; never wait forever


def say(obj: dict) -> None:
    with _lock:
        sys.stdout.write(json.dumps({**obj, "t": time.time()}, default=str) + "\n")
        sys.stdout.flush()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--mode", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--hold-at", type=int, required=True)
    p.add_argument("--every", type=int, required=True)
    p.add_argument("--step-timeout", type=float, required=True)
    p.add_argument("workers", nargs="+", help="HOST=CODE")
    args = p.parse_args()

    from engine.cli.pair_cmd import pair_main
    from engine.events import MetricEvent, StateEvent
    from engine.runtime import start_run
    from engine.train.metrics import read_metrics
    from tests.runtime.helpers import tiny_job

    hosts = []
    for item in args.workers:
        host, code = item.split("=", 1)
        rc = pair_main(host, code)
        say({"paired": host, "rc": rc})
        if rc:
            sys.exit(1)
        hosts.append(host)

    go = threading.Event()

    def sink(event: object) -> None:
        if isinstance(event, MetricEvent) and event.kind == "train":
            say({"step": event.step, "loss": event.values["train_loss"]})
            if event.step == args.hold_at and not go.is_set():
                say({"held": event.step})
                go.wait(HOLD_LIMIT_S)
        elif isinstance(event, StateEvent):
            say({"state": event.state, "message": event.message, "detail": event.detail})

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "go":
                go.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    over = {"dist.mode": args.mode, "dist.workers": len(hosts), "run.name": "cut",
            "run.checkpoint_every": args.every, "dist.step_timeout_s": args.step_timeout}  # fmt: skip
    job = tiny_job(args.out, args.steps, **over).with_overrides([f"dist.hosts={json.dumps(hosts)}"])
    result = start_run(job, sink, data_dir=args.out / "cache").wait(timeout=240)
    if result is None:
        say({"result": "timeout", "losses": [], "adapter": False, "message": ""})
        sys.exit(1)
    losses = []
    if result.run_dir is not None and (Path(result.run_dir) / "metrics.jsonl").exists():
        rows = read_metrics(Path(result.run_dir) / "metrics.jsonl")
        rows = sorted((r for r in rows if "train_loss" in r), key=lambda r: r["step"])
        losses = [r["train_loss"] for r in rows]
    adapter = (
        bool(result.adapter_dir) and (Path(result.adapter_dir) / "adapters.safetensors").is_file()
    )
    say({"result": result.status, "losses": losses, "adapter": adapter,
         "message": result.message, "run_dir": str(result.run_dir)})  # fmt: skip


if __name__ == "__main__":
    main()
