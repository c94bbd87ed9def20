"""A worker lost mid-step: seconds from the kill to the next completed step, and steps redone.

For each gRPC sync mode (all-reduce, reduce-scatter, ring, parameter-server) and for mlx, a
run on three local worker processes (the bundled stories260K model on the demo dataset, the
same tiny job the recovery tests use) has one worker killed mid-step: after step ``--kill-after``
the worker is frozen (SIGSTOP) for ``--freeze`` s, so its peers certainly wait for it in the
step's collective, then killed (SIGKILL); the clock starts at the SIGKILL. Rank 1 is killed:
in parameter-server mode rank 0 is the server, whose loss sets the job up again (as mlx does).

Measured from the run's own events, wall clock: ``kill_to_next_step_s`` is the time from the
SIGKILL to the first step completed after the recovery; ``steps_redone`` counts steps that
completed twice (the interrupted step never completed, so it is not one of them). Each run's
loss curve is compared with a run that never failed (rel diff printed): with the regroup it
matches, except ZeRO-1 when the lost shard's moments come from an older snapshot. What is
modelled: each worker stands for a Mac; a SIGKILL stands for a Mac that vanished with its
sockets reset (a cut link without a reset is found by the heartbeat instead, seconds later:
tests/reliability). The model is tiny, so the figures are the recovery's own cost, not a
model's load time; with a real model the old path's reload (1-7 s) is what Regroup saves.

Usage: python bench/recovery.py [--steps 12] [--kill-after 5] [--freeze 1.0] [--verbose]
Last line: ``kill_to_next_step_s_max=<a> steps_redone_max=<b> mlx_kill_to_next_step_s=<c>``
(targets a <= 1.0 over the gRPC modes, b = 0, c <= 3.0).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from engine.config import JobSpec  # noqa: E402
from engine.events import MetricEvent, StateEvent  # noqa: E402
from engine.runtime import start_run  # noqa: E402
from engine.train.metrics import read_metrics  # noqa: E402

GRPC_MODES = ["all-reduce", "reduce-scatter", "ring", "parameter-server"]


def job(out: Path, mode: str, steps: int, name: str) -> JobSpec:
    sets = [
        f"run.steps={steps}", "run.batch_size=5", "data.max_seq_len=64", "run.val_every=0",
        "run.checkpoint_every=4", f'run.out_dir="{out}"', "optim.learning_rate=0.01",
        "optim.warmup_steps=3", "lora.rank=4", f'dist.mode="{mode}"', "dist.workers=3",
        "dist.step_timeout_s=60.0", f'run.name="{name}"', "dist.rejoin=false",
    ]  # fmt: skip
    return JobSpec().with_overrides(sets)


class Recorder:
    def __init__(self, after_step: int):
        self.events: list[tuple[float, object]] = []
        self.after_step, self.reached = after_step, threading.Event()

    def __call__(self, event: object) -> None:
        self.events.append((time.time(), event))
        if (
            isinstance(event, MetricEvent)
            and event.kind == "train"
            and event.step >= self.after_step
        ):
            self.reached.set()


def losses(run_dir: Path) -> np.ndarray:
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("kind", "train") == "train"]
    return np.array([r["train_loss"] for r in sorted(rows, key=lambda r: r["step"])])


def run_once(out: Path, mode: str, args: argparse.Namespace, kill: bool) -> dict:
    rec = Recorder(args.kill_after)
    name = f"{mode}-{'kill' if kill else 'clean'}"
    handle = start_run(job(out, mode, args.steps, name), rec, data_dir=out / "cache")
    t_kill = None
    if kill:
        if not rec.reached.wait(240):
            raise RuntimeError(f"{mode}: no step {args.kill_after} within 240 s")
        pid = handle._coordinator.cluster.local[1].pid
        os.kill(pid, signal.SIGSTOP)  # its peers now wait for it in the step's collective
        time.sleep(args.freeze)
        t_kill = time.time()
        os.kill(pid, signal.SIGKILL)
    result = handle.wait(300)
    if result is None or result.status != "finished":
        raise RuntimeError(f"{mode}: the run did not finish: {result}")
    out_row = {"mode": mode, "losses": losses(result.run_dir)}
    if kill:
        rec_t, info = next(
            (t, e.detail) for t, e in rec.events
            if isinstance(e, StateEvent) and e.detail.get("recovered")
        )  # fmt: skip
        next_step = min(t for t, e in rec.events
                        if isinstance(e, MetricEvent) and e.kind == "train" and t > rec_t)  # fmt: skip
        done = Counter(e.step for _, e in rec.events
                       if isinstance(e, MetricEvent) and e.kind == "train")  # fmt: skip
        out_row.update(
            kill_to_next_step_s=next_step - t_kill, detect_s=info["detected_at"] - t_kill,
            steps_redone=sum(1 for n in done.values() if n > 1),
            regrouped=bool(info.get("regrouped")), failed_step=info["failed_step"],
            stale=info.get("moments_from_snapshot", 0),
        )  # fmt: skip
    return out_row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--kill-after", type=int, default=5)
    p.add_argument("--freeze", type=float, default=1.0)
    p.add_argument("--modes", default=",".join([*GRPC_MODES, "mlx"]), help="comma-separated")
    p.add_argument("--keep", action="store_true", help="keep the run folders (printed)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger("engine").setLevel(logging.INFO if args.verbose else logging.ERROR)
    tmp = tempfile.mkdtemp(prefix="orchard-recovery-")
    try:
        out = Path(tmp)
        clean = run_once(out, "all-reduce", args, kill=False)["losses"]
        print(f"{args.steps}-step run on 3 local workers (stories260K); rank 1 frozen "
              f"{args.freeze:g}s after step {args.kill_after}, then SIGKILL", flush=True)  # fmt: skip
        rows = []
        for mode in args.modes.split(","):
            r = run_once(out, mode, args, kill=True)
            rel = np.abs(r["losses"] - clean) / np.abs(clean)
            how = "regrouped in place" if r["regrouped"] else "set up again from the snapshot"
            stale = f", {r['stale']} ZeRO-1 moments from the snapshot" if r["stale"] else ""
            print(f"{mode:>16}: {how}; detection {r['detect_s']:.3f}s, kill->next step "
                  f"{r['kill_to_next_step_s']:.2f}s, steps redone {r['steps_redone']} (step "
                  f"{r['failed_step']} interrupted){stale}; loss vs a run that never failed: "
                  f"worst rel diff {rel.max():.1e}", flush=True)  # fmt: skip
            rows.append(r)
    finally:
        if args.keep:
            print(f"run folders kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    grpc = [r for r in rows if r["mode"] != "mlx"] or [
        {"kill_to_next_step_s": np.nan, "steps_redone": -1}
    ]
    mlx = next((r for r in rows if r["mode"] == "mlx"), {"kill_to_next_step_s": np.nan})
    print(f"kill_to_next_step_s_max={max(r['kill_to_next_step_s'] for r in grpc):.2f} "
          f"steps_redone_max={max(r['steps_redone'] for r in grpc)} "
          f"mlx_kill_to_next_step_s={mlx['kill_to_next_step_s']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
