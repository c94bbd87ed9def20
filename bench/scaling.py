"""Data-parallel scaling on this machine: tokens/s with 1 and 2 local workers, same global batch.

The anchor is the 1-worker run through the same coordinator and gRPC control plane (no
collectives). Each figure is the median over the steps after a warm-up (compilation).
Prints one line per run and, last, ``speedup_2_workers=<s> comm_share=<c>`` where
comm_share is the 2-worker run's median share of a step spent in gradient sync.

On a 2-core Linux box the speedup is bounded by the cores: 1 worker already uses both
(OpenBLAS threads), so 2 workers split the same 2 cores and add communication.

Usage: python bench/scaling.py [--steps 20] [--batch 16] [--seq 128] [--mode all-reduce]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import JobSpec  # noqa: E402
from engine.runtime import start_run  # noqa: E402
from engine.train.metrics import read_metrics  # noqa: E402

WARMUP = 3


def measure(workers: int, args: argparse.Namespace, out: Path) -> tuple[float, float]:
    job = JobSpec().with_overrides([
        f"run.steps={args.steps}", f"run.batch_size={args.batch}", f"data.max_seq_len={args.seq}",
        "run.val_every=0", "run.checkpoint_every=0", f'run.out_dir="{out}"', f'run.name="w{workers}"',
        f"dist.workers={workers}", f'dist.mode="{args.mode}"',
    ])  # fmt: skip
    result = start_run(job, data_dir=out / "cache").wait(1800)
    if result is None or result.status != "finished":
        raise SystemExit(f"{workers} workers: run did not finish: {result}")
    rows = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["kind"] == "train"][
        WARMUP:
    ]
    tps = statistics.median(r["tokens"] / r["step_time_s"] for r in rows)
    share = statistics.median(r["comm_s"] / r["step_time_s"] for r in rows)
    return tps, share


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--mode", default="all-reduce")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tps1, _ = measure(1, args, Path(tmp))
        print(f"1 worker:  {tps1:.0f} tokens/s (anchor)")
        tps2, share2 = measure(2, args, Path(tmp))
        print(
            f"2 workers: {tps2:.0f} tokens/s ({tps2 / tps1:.2f}x the anchor), {share2:.0%} of a step in sync"
        )
    print(f"speedup_2_workers={tps2 / tps1:.2f} comm_share={share2:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
