"""Where an ``orchard train`` run's wall time goes outside its steps.

Runs the job bench/e2e_vs_mlx_lm.py times (one local worker, rank ``--rank`` on every linear
layer, validation and the adapter at the end) once, keeps its run folder, and prints each log
line of the coordinator and the worker with its time since the command was spawned, then
the wall time cut into: before the first step, the steps (metrics.jsonl's step_time_s),
between steps (validation, checkpoints), and after the last step (saving, exit).

    python bench/orchard_phases.py --model DIR [--data wikisql] [--iters 20] [--out DIR]

Last line: ``wall_s=<w> before_first_step_s=<a> steps_s=<b> between_steps_s=<c>
after_last_step_s=<d>``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.e2e_vs_mlx_lm import DATA, blas_env, orchard_job  # noqa: E402

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (.*)$")


def log_lines(path: Path, spawned: float) -> list[tuple[float, str]]:
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = STAMP.match(line)
        if m:
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((t - spawned, m.group(2)[:150]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="wikisql")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--out", default="", help="keep the run here (default: a temporary folder)")
    args = p.parse_args()
    args.model = str(Path(args.model).resolve())
    out = Path(args.out or tempfile.mkdtemp(prefix="orchard_phases_"))
    out.mkdir(parents=True, exist_ok=True)
    job = orchard_job(args, DATA.get(args.data, Path(args.data)).resolve(), out, packing=False)
    spawned = time.time()
    with open(out / "stdout.txt", "w", encoding="utf-8") as f:
        rc = subprocess.run([sys.executable, "-m", "engine.cli.main", "train", str(job)],
                            stdout=f, stderr=subprocess.STDOUT, env=blas_env(), cwd=ROOT).returncode  # fmt: skip
    ended = time.time()
    run = out / "runs" / "bench"
    if rc != 0:
        sys.exit(f"orchard train failed ({rc}); see {out / 'stdout.txt'}")
    lines = log_lines(run / "log.txt", spawned)
    for worker_log in sorted((run / "workers").glob("*.log")):
        lines += [(t, f"[{worker_log.stem}] {s}") for t, s in log_lines(worker_log, spawned)]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [r for r in rows if r.get("kind") == "train"]
    for r in steps[:1] + steps[-1:]:
        lines.append((r["time"] - spawned, f"step {r['step']} done ({r['step_time_s']:.3f} s)"))
    lines.append((ended - spawned, "command exited"))
    for t, s in sorted(lines):
        print(f"{t:8.2f} s  {s}")
    wall = ended - spawned
    first_end, last_end = steps[0]["time"] - spawned, steps[-1]["time"] - spawned
    before = first_end - steps[0]["step_time_s"]
    step_s = sum(r["step_time_s"] for r in steps)
    between = last_end - before - step_s
    print(f"wall_s={wall:.2f} before_first_step_s={before:.2f} steps_s={step_s:.2f} "
          f"between_steps_s={between:.2f} after_last_step_s={wall - last_end:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
