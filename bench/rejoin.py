"""A worker that comes back: how long the group stops for it, and which state moves where.

For each model and sync mode, a run on three local worker processes (dist.rejoin on) has
rank 1 killed (SIGKILL) after step ``--kill-after``: the survivors regroup, the engine
restarts the worker, and it joins at a step boundary with the current state. Each
configuration runs twice, side by side:
- ``peer`` (now): the restarted worker is set up (files, model, data) while the group trains
  on, then at the join all regroup and it takes the state from a peer, worker to worker;
- ``snapshot`` (before; ``ReturningWorkers.peer_state`` off, the path mlx still takes): at
  the join the coordinator takes a snapshot of every worker's state, the worker sets up
  while the others wait, and PutState sends the snapshot to every worker.
Models: ``tiny`` (the bundled stories260K, 8,960 LoRA parameters at rank 4) and ``big`` (a
random Llama, hidden 512, 4 layers, built by scripts/make_random_model.py, with LoRA rank
256 on q/k/v/o: 4.2M LoRA parameters, so a worker's state, parameters and two AdamW moments
in fp32, is 48 MiB).

Measured from the run's events: ``rejoin_s``, the coordinator's time at the join while the
others wait (= setup: files and the newcomer's SetupJob, or its Regroup when it was set up
ahead, + state: snapshot, Regroup and PutState, or Regroup and PullState); ``back_to_step_s``,
from the moment the restarted worker answered to the first step completed with it in the
group; the state bytes moved (through the coordinator, or worker to worker); and the two
runs' losses against each other (the same state: the same curve). After the kill each step
is held until the restarted worker is back (peer: and set up), so the run cannot end before
it rejoins. On a loaded machine a restarted process spends seconds importing MLX and mlx-lm
before its SetupJob, in both paths: that, and the model load, is what the others no longer
wait for.

Usage: python bench/rejoin.py [--models tiny,big] [--modes all-reduce,reduce-scatter]
Last line: ``rejoin_s_snapshot_tiny=.. rejoin_s_peer_tiny=.. state_s_.. back_to_step_s_..``
for each path and model (the worst over the modes).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from engine.config import DEMO_DATASET, DEMO_MODEL, JobSpec  # noqa: E402
from engine.events import MetricEvent, StateEvent  # noqa: E402
from engine.runtime import start_run  # noqa: E402
from engine.runtime.returning_workers import ReturningWorkers  # noqa: E402
from engine.train.metrics import read_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIG = ["--hidden", "512", "--layers", "4"]  # with lora.rank=256 on q/k/v/o: 4.2M LoRA params


def job(out: Path, model: str, mode: str, steps: int, name: str) -> JobSpec:
    rank = 256 if model != str(DEMO_MODEL) else 4
    sets = [
        f'model.path="{model}"', f'data.path="{DEMO_DATASET}"', f"run.steps={steps}",
        "run.batch_size=6", "data.max_seq_len=64", "run.val_every=0", "run.checkpoint_every=0",
        f'run.out_dir="{out}"', "optim.learning_rate=0.01", "optim.warmup_steps=3",
        f"lora.rank={rank}", f'dist.mode="{mode}"', "dist.workers=3", "dist.rejoin=true",
        "dist.step_timeout_s=120.0", f'run.name="{name}"',
    ]  # fmt: skip
    return JobSpec().with_overrides(sets)


class Recorder:
    """The run's events, timed; after the kill it holds each step until the restarted worker
    is back (and, on the peer path, set up), so the run cannot end before it rejoins."""

    def __init__(self, after_step: int):
        self.events: list[tuple[float, object]] = []
        self.after_step, self.reached = after_step, threading.Event()
        self.handle = None

    def __call__(self, event: object) -> None:
        self.events.append((time.time(), event))
        if isinstance(event, MetricEvent) and event.kind == "train":
            if event.step >= self.after_step:
                self.reached.set()
            if event.step > self.after_step and not self.detail("rejoined"):
                rejoiner = self.handle._coordinator.rejoiner
                deadline = time.monotonic() + 600
                while not rejoiner.waiting and time.monotonic() < deadline:
                    time.sleep(0.02)

    def detail(self, key: str) -> dict | None:
        return next((e.detail for _, e in self.events
                     if isinstance(e, StateEvent) and e.detail.get(key)), None)  # fmt: skip


def losses(run_dir: Path) -> np.ndarray:
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("kind", "train") == "train"]
    return np.array([r["train_loss"] for r in sorted(rows, key=lambda r: r["step"])])


def run_once(out: Path, model: str, mode: str, peer: bool, args: argparse.Namespace) -> dict:
    ReturningWorkers.peer_state = peer
    rec = Recorder(args.kill_after)
    name = f"{Path(model).name}-{mode}-{'peer' if peer else 'coordinator'}"
    handle = rec.handle = start_run(job(out, model, mode, args.steps, name), rec,
                                    data_dir=out / "cache")  # fmt: skip
    if not rec.reached.wait(600):
        raise RuntimeError(f"{name}: no step {args.kill_after} within 600 s")
    os.kill(handle._coordinator.cluster.local[1].pid, signal.SIGKILL)
    result = handle.wait(900)
    if result is None or result.status != "finished":
        raise RuntimeError(f"{name}: the run did not finish: {result}")
    back = rec.detail("rejoined")
    if back is None:
        raise RuntimeError(f"{name}: the killed worker never rejoined (raise --steps)")
    first = min(t for t, e in rec.events if isinstance(e, MetricEvent) and e.kind == "train"
                and e.step > back["step"])  # fmt: skip
    return {"rejoin_s": back["rejoin_s"], "setup_s": back["setup_s"], "state_s": back["state_s"],
            "back_to_step_s": first - back["back_at"], "state": back["state"],
            "mib": back["state_bytes"] / 2**20, "put_state": back["put_state"],
            "losses": losses(result.run_dir)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="tiny,big", help="comma-separated: tiny, big")
    p.add_argument("--modes", default="all-reduce,reduce-scatter", help="comma-separated")
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--kill-after", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="keep the run folders (printed)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    for h in logging.getLogger().handlers:  # each run's log.txt sets the engine to INFO
        h.setLevel(logging.INFO if args.verbose else logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="orchard-rejoin-"))
    worst: dict[str, float] = {}
    try:
        models = {"tiny": str(DEMO_MODEL)}
        if "big" in args.models.split(","):
            models["big"] = str(tmp / "big-model")
            subprocess.run([sys.executable, str(ROOT / "scripts" / "make_random_model.py"),
                            models["big"], *BIG], check=True, capture_output=True)  # fmt: skip
        print(f"3 local workers, rank 1 killed after step {args.kill_after} and restarted; "
              "peer: set up ahead, state worker to worker (now); snapshot: set up at the join, "
              "snapshot + PutState to all (before)", flush=True)  # fmt: skip
        for key in args.models.split(","):
            for mode in args.modes.split(","):
                rows = {
                    peer: run_once(tmp, models[key], mode, peer, args) for peer in (False, True)
                }
                c, r = rows[False], rows[True]
                diff = np.abs(r["losses"] - c["losses"]).max() / np.abs(c["losses"]).max()
                for x in (c, r):
                    print(f"{key:>4} {mode:>14} {x['state']:>8}: back -> first step with it "
                          f"{x['back_to_step_s']:5.2f}s; the others wait {x['rejoin_s']:5.2f}s "
                          f"= setup {x['setup_s']:5.2f}s + state {x['state_s']:5.3f}s; state "
                          f"moved {x['mib']:6.1f} MiB; PutState to ranks {x['put_state']}",
                          flush=True)  # fmt: skip
                    tag = x["state"]
                    for k in ("rejoin_s", "state_s", "back_to_step_s"):
                        worst[f"{k}_{tag}_{key}"] = max(worst.get(f"{k}_{tag}_{key}", 0.0), x[k])
                print(f"{key:>4} {mode:>14}: the others wait {c['rejoin_s'] / r['rejoin_s']:.1f}x "
                      f"less, the state {c['state_s'] / r['state_s']:.1f}x faster, "
                      f"{c['mib'] / max(r['mib'], 1e-9):.1f}x fewer bytes; the two runs' loss "
                      f"curves differ by {diff:.1e}", flush=True)  # fmt: skip
    finally:
        ReturningWorkers.peer_state = True
        if args.keep:
            print(f"run folders kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(" ".join(f"{k}={v:.3f}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
