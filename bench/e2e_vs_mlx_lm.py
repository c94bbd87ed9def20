"""The user's commands side by side: ``orchard train`` against ``mlx_lm.lora``, end to end.

Same model, data and settings on both sides: LoRA rank ``--rank`` (alpha 2 x rank, mlx-lm
scale 2) on every linear layer of every block, dropout 0, Adam (AdamW with no decay), a
constant learning rate, no clipping, batch ``--batch``, ``--iters`` steps, sequences up to
``--seq`` tokens, no prompt masking and no packing (mlx-lm has neither on by default), one
validation batch (mlx-lm validates at its first and last step, Orchard at its last), the
adapter saved once at the end. Orchard runs through the engine with one local worker, as
``orchard train`` always does, at the same CPU priority as mlx-lm (``dist.worker_niceness =
0``: the default 10 keeps a desktop responsive, and on a busy machine it would hand the
worker's CPU to everything else). Each command is timed from spawn to exit (imports, loading,
tokenising, training, saving all in), ``--rounds`` times each. The commands of a round run
side by side in turns of ``--turn`` seconds (bench/interleave.py: one computes while the
other is stopped, so both see the same machine load at that grain; this box is shared and
its speed swings 2-3x within a minute); ``--turn 0`` runs them one after the other, in
alternating order, as it does by default on a GPU (a stopped process's kernels would go on
running through the other's turn). With
``--warmup`` each tool first runs 5 untimed steps: on a GPU the first process to use a kernel
compiles it (MLX caches it for later processes), which would otherwise bill whichever tool
runs first for both.

Also printed: real (non-pad) target tokens per second of training time on each side (from
Orchard's metrics.jsonl and mlx-lm's reports) and, with ``--packing``, Orchard with
``data.packing = true`` against the same mlx-lm run, in real tokens/s.

    python bench/e2e_vs_mlx_lm.py --model DIR [--data wikisql|chat|FOLDER] [--iters 20]

The last line is ``wall_ratio=<mlx_lm wall / orchard wall>`` (above 1: Orchard is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.interleave import Command, Turns, run_in_turns, running_s  # noqa: E402

DATA = {"wikisql": ROOT / "bench" / "data" / "wikisql", "chat": ROOT / "bench" / "data" / "chat"}
KEYS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]  # fmt: skip
OPENBLAS = "/usr/lib/x86_64-linux-gnu/libopenblas.so.0"


def mlx_lm_config(args, data: Path, out: Path) -> Path:
    cfg = {
        "model": str(args.model), "train": True, "fine_tune_type": "lora", "optimizer": "adam",
        "data": str(data), "seed": 0, "num_layers": -1, "batch_size": args.batch,
        "iters": args.iters, "val_batches": 1, "learning_rate": args.lr,
        "steps_per_report": 1, "steps_per_eval": 10**9, "save_every": 10**9,
        "adapter_path": str(out / "adapters"), "max_seq_length": args.seq, "mask_prompt": False,
        "lora_parameters": {"rank": args.rank, "scale": 2.0, "dropout": 0.0, "keys": KEYS},
    }  # fmt: skip
    path = out / "mlx_lm.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")  # JSON is YAML
    return path


def orchard_job(args, data: Path, out: Path, packing: bool) -> Path:
    keys = ", ".join(f'"{k.split(".")[-1]}"' for k in KEYS)
    text = f"""
[model]
path = "{args.model}"
[data]
path = "{data}"
max_seq_len = {args.seq}
mask_prompt = false
packing = {"true" if packing else "false"}
[lora]
rank = {args.rank}
alpha = {2.0 * args.rank}
dropout = 0.0
target_modules = [{keys}]
[optim]
learning_rate = {args.lr}
schedule = "constant"
warmup_steps = 0
weight_decay = 0.0
grad_clip = 0.0
[run]
steps = {args.iters}
batch_size = {args.batch}
val_every = {args.iters}
val_batches = 1
checkpoint_every = 0
out_dir = "{out / "runs"}"
name = "bench"
[dist]
workers = 1
worker_niceness = 0
"""
    path = out / "job.toml"
    path.write_text(text, encoding="utf-8")
    return path


def blas_env() -> dict[str, str]:
    """mlx-lm gets the OpenBLAS that Orchard's local workers get on Linux (same threads)."""
    env = dict(os.environ)
    if sys.platform.startswith("linux") and Path(OPENBLAS).is_file():
        env["LD_PRELOAD"] = OPENBLAS
        env.setdefault("OPENBLAS_NUM_THREADS", str(os.cpu_count() or 1))
    return env


def run_timed(cmd: list[str], log: Path, env: dict[str, str]) -> Turns:
    """Run one command alone; its one turn, from spawn to exit."""
    t0 = time.time()
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    turns = [(t0, time.time())]
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])}... failed ({proc.returncode}); see {log}:\n"
                 + log.read_text(encoding="utf-8")[-3000:])  # fmt: skip
    return turns


def _tail(cmds: dict[str, Command]) -> str:
    return "\n".join(
        f"--- {n}:\n" + c.log.read_text(encoding="utf-8")[-2000:] for n, c in cmds.items()
    )


def orchard_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return sorted((r for r in rows if r.get("kind") == "train"), key=lambda r: r["step"])


def _own(turns: Turns, end: float, seconds: float) -> float:
    """The part of a span the command timed itself (``seconds`` up to ``end``, time.time())
    that was its own turn: with --turn, a step's clock also ran through the other's turns."""
    return running_s(turns, end - seconds, end)


def orchard_tokens(run_dir: Path, turns: Turns) -> tuple[float, float]:
    """(real target tokens, training seconds) from metrics.jsonl."""
    rows = orchard_rows(run_dir)[1:]  # the first step compiles
    return sum(r["tokens"] for r in rows), sum(
        _own(turns, r["time"], r["step_time_s"]) for r in rows
    )


def engine_overhead(run_dir: Path, turns: Turns) -> tuple[float, float]:
    """(seconds between consecutive step rows, seconds the worker spent in its steps) over
    the steady steps: the difference is what the engine adds (the Step call, metrics,
    progress, in-memory snapshots), everything but the worker's own step. A worker step
    counts the part of its row's step time that was Orchard's turn."""
    rows = orchard_rows(run_dir)[1:]
    wall = sum(running_s(turns, a["time"], b["time"]) for a, b in zip(rows, rows[1:], strict=False))
    worker = sum(
        (r["compute_s"] + r.get("comm_s", 0.0)) * _own(turns, r["time"], r["step_time_s"])
        / max(r["step_time_s"], 1e-9)
        for r in rows[1:]
    )  # fmt: skip
    return wall, worker


# mlx_lm.lora itself, with one line more per report: its TUI rounds the figures, so the
# exact ones (the same numbers it shows) are printed as well. Nothing else changes.
MLX_LM_LORA = """
import sys
import time
import mlx_lm.cli_ui as ui
shown = ui.TrainUI.report_train
def report_train(self, it, train_loss, tokens_sec, trained_tokens):
    print(f"BENCH it={it} tokens_sec={tokens_sec!r} trained={trained_tokens!r} "
          f"time={time.time()!r}", flush=True)
    shown(self, it, train_loss, tokens_sec, trained_tokens)
ui.TrainUI.report_train = report_train
from mlx_lm.lora import main
sys.argv = ["mlx_lm.lora", *sys.argv[1:]]
main()
"""


def mlx_lm_tokens(log: Path, turns: Turns) -> tuple[float, float]:
    """(real target tokens, training seconds) from mlx-lm's per-step reports."""
    pat = re.compile(r"BENCH it=(\d+) tokens_sec=([\d.e+-]+) trained=([\d.e+-]+) time=([\d.e+-]+)")
    tokens = seconds = 0.0
    before = 0.0
    for m in pat.finditer(log.read_text(encoding="utf-8")):
        trained = float(m.group(3))
        step_tokens, before = trained - before, trained
        if int(m.group(1)) == 1:
            continue  # the first step compiles
        tokens += step_tokens
        seconds += _own(turns, float(m.group(4)), step_tokens / float(m.group(2)))
    return tokens, seconds


def command(name: str, args: argparse.Namespace, data: Path, out: Path) -> list[str]:
    """The command line of one tool's run (orchard, mlx_lm or orchard_packed) into ``out``."""
    if name == "mlx_lm":
        return [sys.executable, "-c", MLX_LM_LORA, "-c", str(mlx_lm_config(args, data, out))]
    job = orchard_job(args, data, out, packing=name == "orchard_packed")
    return [sys.executable, "-m", "engine.cli.main", "train", str(job)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model folder (scripts/make_random_model.py)")
    p.add_argument(
        "--data", default="wikisql", help="wikisql, chat, or a folder with train/valid.jsonl"
    )
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--packing", action="store_true", help="also time Orchard with packing on")
    p.add_argument("--warmup", action="store_true", help="5 untimed steps of each tool first")
    p.add_argument("--turn", type=float, default=None,
                   help="seconds of each turn when the commands run side by side (0: in a row; "
                        "default 0.5 on a CPU, 0 on a GPU)")  # fmt: skip
    args = p.parse_args()
    if args.turn is None:
        import mlx.core as mx

        args.turn = 0.5 if mx.default_device() == mx.cpu else 0.0
    data = DATA.get(args.data, Path(args.data)).resolve()
    args.model = str(Path(args.model).resolve())
    env = blas_env()
    walls: dict[str, list[float]] = {"orchard": [], "mlx_lm": [], "orchard_packed": []}
    toks: dict[str, list[tuple[float, float]]] = {k: [] for k in walls}
    overhead: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="e2e_") as tmp:
        if args.warmup:
            short = argparse.Namespace(**{**vars(args), "iters": min(5, args.iters)})
            for name in ("orchard", "mlx_lm", "orchard_packed"):
                out = Path(tmp) / f"warmup_{name}"
                out.mkdir()
                cmd = command(name, short, data, out)
                ((a, b),) = run_timed(cmd, out / "log.txt", env)
                print(f"warm-up {name}: {b - a:.1f} s (untimed)")
        for r in range(args.rounds):
            order = ["orchard", "mlx_lm"] if r % 2 == 0 else ["mlx_lm", "orchard"]
            if args.packing:
                order.append("orchard_packed")
            outs = {name: Path(tmp) / f"{name}{r}" for name in order}
            cmds = {}
            for name, out in outs.items():
                out.mkdir()
                cmds[name] = Command(command(name, args, data, out), out / "log.txt", env, ROOT)
            if args.turn > 0:
                try:
                    spent = run_in_turns(cmds, args.turn)
                except RuntimeError as e:
                    sys.exit(f"{e}:\n" + _tail(cmds))
            else:
                spent = {name: run_timed(c.argv, c.log, env) for name, c in cmds.items()}
            for name in order:
                out, log, turns = outs[name], cmds[name].log, spent[name]
                wall = sum(b - a for a, b in turns)
                walls[name].append(wall)
                if name == "mlx_lm":
                    toks[name].append(mlx_lm_tokens(log, turns))
                else:
                    toks[name].append(orchard_tokens(out / "runs" / "bench", turns))
                    if name == "orchard":
                        overhead.append(engine_overhead(out / "runs" / "bench", turns))
                tk, sec = toks[name][-1]
                print(f"round {r + 1} {name:15s} wall {wall:7.1f} s, {tk:8.0f} real tokens "
                      f"in {sec:6.1f} s of steps: {tk / max(sec, 1e-9):7.0f} tokens/s", flush=True)  # fmt: skip
    rate = {k: sum(t for t, _ in v) / max(sum(s for _, s in v), 1e-9) for k, v in toks.items() if v}
    wall = {k: sum(v) for k, v in walls.items() if v}
    print(f"data {data.name}: real tokens/s orchard {rate['orchard']:.0f}, mlx_lm {rate['mlx_lm']:.0f}: "
          f"real_tokens_per_s_ratio={rate['orchard'] / rate['mlx_lm']:.3f}")  # fmt: skip
    if args.packing:
        print(
            f"packed: orchard {rate['orchard_packed']:.0f} real tokens/s: "
            f"packed_real_tokens_per_s_ratio={rate['orchard_packed'] / rate['mlx_lm']:.3f}"
        )
    between, worker = (sum(x) for x in zip(*overhead, strict=True))
    print(
        f"engine overhead with one worker: {between - worker:.3f} s of {between:.2f} s of steady "
        f"steps: engine_overhead_share={(between - worker) / max(between, 1e-9):.4f}"
    )
    print(f"wall: orchard {wall['orchard']:.1f} s, mlx_lm {wall['mlx_lm']:.1f} s")
    print(f"wall_ratio={wall['mlx_lm'] / wall['orchard']:.3f}")


if __name__ == "__main__":
    main()
