"""Two uneven workers: tokens/s of an equal split against a split that follows measured speed.

Two local worker processes (one BLAS thread each) serve four runs of the same job, side by
side in one invocation: each worker alone, both with an equal split (``dist.balance =
"equal"``), and both balanced (``"speed"``, the default). One worker is held to about a third
of a CPU by a cgroup (v1) CPU quota, set after it starts; the cgroup has a unique name and is
always removed. Throughput is trained tokens (what tokens/s counts everywhere:
engine/plan/efficiency.py) over the summed step times of the steps after a warm-up
(compilation, and the balanced run's first re-splits); the padded tokens computed per second
are printed beside it. Each worker stands for a Mac of its own (one BLAS thread, one held by
the cgroup), so ideal is the sum of each worker's throughput alone, measured by running it
alone, and efficiency_vs_ideal is engine.plan.scaling_efficiency of the balanced run.

The model is a random-weight Llama (a few million parameters, the bundled demo tokenizer),
with LoRA on every linear layer, so a step's compute dominates its gradient sync. The data is
random words cut at ``--seq`` tokens, so every micro-batch has the same shape.

Needs root (the cgroup). Usage:
    python bench/uneven.py [--steps 14] [--warmup 4] [--rounds 2] [--batch 16] [--seq 128]
                           [--quota 0.33] [--verbose]
Last line: ``balanced_vs_equal_speedup=<x> efficiency_vs_ideal=<y>`` (targets x >= 1.5, y >= 0.85).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import JobSpec, resolve_model_path  # noqa: E402
from engine.plan import scaling_efficiency  # noqa: E402
from engine.rpc.auth import TOKEN_ENV, new_token  # noqa: E402
from engine.runtime import start_run  # noqa: E402
from engine.runtime.local_workers import start_local_worker, stop_local_workers  # noqa: E402
from engine.train.metrics import read_metrics  # noqa: E402

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 20_000  # a short period: the quota throttles evenly, not in 100 ms bursts
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_model(out: Path, hidden: int, layers: int) -> int:
    """A random-weight Llama with the demo model's tokenizer; returns its parameter count."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    demo = Path(resolve_model_path("demo"))
    config = json.loads((demo / "config.json").read_text())
    config.update(hidden_size=hidden, intermediate_size=hidden * 8 // 3, num_hidden_layers=layers,
                  num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                  head_dim=64, max_position_embeddings=1024)  # fmt: skip
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    out.mkdir(parents=True)
    mx.save_safetensors(str(out / "model.safetensors"), weights)
    (out / "config.json").write_text(json.dumps(config, indent=1))
    for f in demo.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, out / f.name)
    return sum(v.size for v in weights.values())


def make_dataset(out: Path, n: int = 256, words: int = 200) -> None:
    """Random words, long enough that every record is cut at --seq tokens."""
    import numpy as np

    rng = np.random.default_rng(0)
    vocab = ["robot", "garden", "apple", "river", "light", "stone", "cloud", "small", "green",
             "happy", "jumped", "under", "over", "tree", "bird", "sang", "quiet", "bright"]  # fmt: skip
    with out.open("w") as f:
        for _ in range(n):
            f.write(json.dumps({"text": " ".join(rng.choice(vocab, words))}) + "\n")


@contextmanager
def cpu_quota(pid: int, share: float) -> Iterator[str]:
    """Hold ``pid`` (all its threads, and any it starts) to ``share`` of one CPU."""
    if not (CGROUP_CPU / "cgroup.procs").is_file():
        raise SystemExit(f"{CGROUP_CPU}: no cgroup v1 cpu controller here")
    group = CGROUP_CPU / f"orchard-uneven-{secrets.token_hex(4)}"
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(int(PERIOD_US * share)))
        (group / "cgroup.procs").write_text(str(pid))
        yield group.name
    finally:
        for task in (group / "tasks").read_text().split():  # back to the root group
            try:
                (CGROUP_CPU / "tasks").write_text(task)
            except OSError:
                pass  # the thread has ended
        group.rmdir()


def measure(name: str, hosts: list[str], balance: str, args: argparse.Namespace,
            root: Path) -> tuple[float, float]:  # fmt: skip
    """One run; returns (target tokens, seconds) of its steps after the warm-up."""
    out = root / "runs"
    job = JobSpec().with_overrides([
        f'model.path="{root / "model"}"', f'data.path="{root / "data.jsonl"}"',
        'data.format="text"', f"data.max_seq_len={args.seq}", "data.valid_fraction=0.0",
        f"run.steps={args.steps}", f"run.batch_size={args.batch}", "run.val_every=0",
        "run.checkpoint_every=0", f'run.out_dir="{out}"', f'run.name="{name}"',
        f"lora.rank={args.rank}", f"lora.target_modules={json.dumps(ALL_LINEAR)}",
        f"dist.hosts={json.dumps(hosts)}", f'dist.balance="{balance}"', 'dist.mode="all-reduce"',
    ])  # fmt: skip
    result = start_run(job, data_dir=out / "cache").wait(3600)
    if result is None or result.status != "finished":
        raise SystemExit(f"{name}: run did not finish: {result}")
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    if args.verbose:
        for r in rows:
            if r["kind"] == "worker":
                print(f"  step {r['step']} worker {r['worker']}: share {r['share']:.0f} "
                      f"grad_s {r.get('grad_s', 0):.3f} compute_s {r['compute_s']:.3f} "
                      f"comm_s {r['comm_s']:.3f}")  # fmt: skip
    train = [r for r in rows if r["kind"] == "train"][args.warmup :]
    tokens, secs = sum(r["tokens"] for r in train), sum(r["step_time_s"] for r in train)
    work = sum(r.get("work_tokens", 0.0) for r in train)
    last = max(r["step"] for r in rows)
    shares = [int(r["share"]) for r in rows if r["kind"] == "worker" and r["step"] == last]
    comm = sum(r["comm_s"] for r in train) / secs
    print(f"run={name} workers={len(hosts)} tokens_per_s={tokens / secs:.1f} "
          f"work_tokens_per_s={work / secs:.1f} step_s={secs / len(train):.3f} comm_share={comm:.2f} "
          f"final_shares={'/'.join(map(str, shares))}", flush=True)  # fmt: skip
    return tokens, secs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--warmup", type=int, default=4, help="steps left out of each figure")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--quota", type=float, default=1 / 3, help="the slow worker's share of a CPU")
    p.add_argument("--rounds", type=int, default=2, help="times each run is repeated")
    p.add_argument("--verbose", action="store_true", help="print every worker's steps")
    args = p.parse_args()
    if args.steps <= args.warmup:
        raise SystemExit("--steps must exceed --warmup")
    # a signal ends the run through the finally blocks: the cgroup and workers are removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with tempfile.TemporaryDirectory(prefix="orchard-uneven-") as tmp:
        root = Path(tmp)
        n = make_model(root / "model", args.hidden, args.layers)
        make_dataset(root / "data.jsonl")
        print(f"model: random Llama, {n / 1e6:.1f}M parameters, LoRA rank {args.rank} on all "
              f"linear layers; batch {args.batch} x {args.seq} tokens", flush=True)  # fmt: skip
        token = new_token()
        os.environ[TOKEN_ENV] = token
        workers = []
        try:
            for r in range(2):
                workers.append(start_local_worker(token, root / "pool", root / f"w{r}.log", 2))
            fast, slow = (w.address for w in workers)
            with cpu_quota(workers[1].proc.pid, args.quota) as group:
                print(f"worker {slow} held to {args.quota:.2f} CPU (cgroup {group}); "
                      f"worker {fast} free", flush=True)  # fmt: skip
                runs = [("fast-alone", [fast], "equal"), ("slow-alone", [slow], "equal"),
                        ("equal", [fast, slow], "equal"), ("balanced", [fast, slow], "speed")]  # fmt: skip
                sums = {name: [0.0, 0.0] for name, _, _ in runs}
                for k in range(args.rounds):  # rounds interleave the runs: load drifts
                    for name, hosts, balance in runs:
                        tokens, secs = measure(f"{name}-{k}", hosts, balance, args, root)
                        sums[name][0] += tokens
                        sums[name][1] += secs
        finally:
            stop_local_workers(workers, grace_s=10)
    alone_fast, alone_slow, equal, balanced = (t / s for t, s in sums.values())
    for name, value in zip(sums, (alone_fast, alone_slow, equal, balanced), strict=True):
        print(f"{name}: {value:.1f} tokens/s over {args.rounds} round(s)")
    ideal = alone_fast + alone_slow
    print(f"ideal_tokens_per_s={ideal:.1f} (fast alone {alone_fast:.1f} + slow alone "
          f"{alone_slow:.1f}; speed ratio {alone_fast / alone_slow:.2f})")  # fmt: skip
    efficiency = scaling_efficiency(balanced, [alone_fast, alone_slow])
    print(f"balanced_vs_equal_speedup={balanced / equal:.2f} efficiency_vs_ideal={efficiency:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
