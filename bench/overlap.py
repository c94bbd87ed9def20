"""How much of the gradient communication the step hides behind compute, with 2 local workers.

Runs a real job through the engine (two local worker processes, gRPC collectives) for each
sync mode asked for, and reads the per-worker rows of metrics.jsonl: ``comm_s`` (time in
collectives) and ``comm_hidden_s`` (the part that ran on the comm lane while the step went
on computing the next gradient bucket, last layers first). The first steps (compiling) are
left out.

    python bench/overlap.py --model DIR [--modes all-reduce,reduce-scatter] [--steps 12]

The last line is ``comm_hidden_share=<hidden / comm over all modes>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import JobSpec  # noqa: E402
from engine.runtime import start_run  # noqa: E402

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def run(args, mode: str, out: Path) -> tuple[list[dict], list[dict]]:
    job = JobSpec()
    job.model.path = args.model
    job.data.path = str(Path(__file__).resolve().parent / "data" / "wikisql")
    job.data.max_seq_len, job.data.mask_prompt = args.seq, False
    job.lora.rank, job.lora.alpha, job.lora.target_modules = args.rank, 2.0 * args.rank, ALL
    job.run.steps, job.run.batch_size = args.steps, args.batch
    job.run.val_every, job.run.checkpoint_every = 0, 0
    job.run.out_dir, job.run.name = str(out), mode
    job.dist.workers, job.dist.mode = 2, mode
    job.dist.compression, job.dist.worker_niceness = args.compression, 0
    result = start_run(job).wait(timeout=3600)
    if result is None or result.status != "finished":
        sys.exit(f"{mode}: the run did not finish: {result}")
    rows = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    skip = args.warmup
    workers = [r for r in rows if r.get("kind") == "worker" and r["step"] > skip]
    steps = [r for r in rows if r.get("kind") == "train" and r["step"] > skip]
    return workers, steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--modes", default="all-reduce,reduce-scatter,ring,parameter-server")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--compression", default="none")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    comm_all = hidden_all = 0.0
    with tempfile.TemporaryDirectory(prefix="overlap_") as tmp:
        for mode in args.modes.split(","):
            workers, steps = run(args, mode, Path(tmp))
            comm = sum(r["comm_s"] for r in workers)
            hidden = sum(r.get("comm_hidden_s", 0.0) for r in workers)
            comm_all, hidden_all = comm_all + comm, hidden_all + hidden
            step_s = statistics.median(r["step_time_s"] for r in steps)
            print(f"{mode:16s} step {step_s:.3f} s, comm {comm / len(workers):.3f} s a worker-step, "
                  f"hidden {hidden / len(workers):.3f} s: {hidden / max(comm, 1e-9):.0%} of it hidden",
                  flush=True)  # fmt: skip
    print(f"comm_hidden_share={hidden_all / max(comm_all, 1e-9):.3f}")


if __name__ == "__main__":
    main()
