"""What the two memory guards cost: the preflight's time, and the memory guard's share of a step.

Preflight: the median of ``--repeats`` calls on the demo job as shipped and on issue 11's
batch 10000 (a refusal with its suggestions), after one warm-up call (imports).
Memory guard: demo LoRA steps (one process, the trainer's compiled step) timed in
interleaved segments with the guard's thread off and on, so both see the same machine load
(this box is shared); the ratio is of summed step time. The last line is
``preflight_s=<demo> preflight_refusal_s=<batch 10000> guard_step_time_ratio=<on/off>``.

    python bench/preflight_and_guard.py [--repeats 5 --rounds 6 --steps 5 --batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx.core as mx  # noqa: E402

from engine.preflight import preflight  # noqa: E402
from engine.runtime.demo import demo_job  # noqa: E402
from engine.worker.memory_guard import MemoryGuard, memory_limit  # noqa: E402


def time_preflight(job, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        preflight(job)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def guard_ratio(rounds: int, steps: int, batch: int) -> float:
    from engine.data import BatchSampler, collate, prepare_data
    from engine.lora.apply import apply_lora
    from engine.model.load import load_model
    from engine.train import GradientStep

    job = demo_job(1, tempfile.gettempdir(), 1, "all-reduce", [f"run.batch_size={batch}"])
    loaded = load_model(job.model)
    apply_lora(loaded.model, job.lora, seed=0)
    data = prepare_data(job.data, loaded.tokenizer, seed=0)
    sampler = BatchSampler(data.train.lengths(), batch, seed=0)
    step = GradientStep(loaded.model)
    n = 0

    def run(k: int) -> float:
        nonlocal n
        t0 = time.perf_counter()
        for _ in range(k):
            items = [data.train[i] for i in sampler.global_batch(n)]
            mx.eval(step([collate(items, data.pad_id)], 1.0))
            n += 1
        return time.perf_counter() - t0

    run(2)  # compile
    spent = {"off": 0.0, "on": 0.0}
    for r in range(rounds):
        for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
            guard = MemoryGuard(memory_limit()).start() if mode == "on" else None
            spent[mode] += run(steps)
            if guard is not None:
                guard.stop()
    return spent["on"] / spent["off"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    out = Path(tempfile.gettempdir()) / "orchard-bench-runs"
    demo = demo_job(150, out, 2, "all-reduce")
    huge = demo_job(150, out, 2, "all-reduce", ["run.batch_size=10000"])
    preflight(demo)  # imports
    ok_s, refused_s = time_preflight(demo, args.repeats), time_preflight(huge, args.repeats)
    ratio = guard_ratio(args.rounds, args.steps, args.batch)
    print(f"preflight_s={ok_s:.3f} preflight_refusal_s={refused_s:.3f} "
          f"guard_step_time_ratio={ratio:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
