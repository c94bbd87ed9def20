"""Data to fit engine/model/memory.py's activation constants on a GPU backend.

engine/model/memory.py models the activations MLX keeps for backward per token as
``cb * layers * (a*hidden + b*intermediate + c*heads*seq) + vocab * d`` with constants read
off the CPU backend. A GPU backend (Metal on a Mac, CUDA here) runs fused kernels for
attention, log-sum-exp, RMS norm and RoPE, so it keeps less. This script measures real steps
(``python -m engine.model.memory_probe``, each in a fresh process) over a grid that moves one
term at a time: depth, vocabulary, sequence length, heads, LoRA targets, compute dtype and
gradient checkpointing, at Llama-3.2-1B's widths (hidden 2048, MLP 8192, 32/8 heads) with
random bf16 weights and reduced depth. Each case prints one JSON line with the measured peak,
the resident bytes before the steps, the estimate and its breakdown, and the features; the
lines also go to --out. Fit them with ``bench/gpu/memory_fit.py --fit FILE``.

    PYTHONPATH=/tmp/site:$PWD python3 bench/gpu/memory_fit.py --out /tmp/memfit.jsonl
    python3 bench/gpu/memory_fit.py --fit /tmp/memfit.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ATTENTION = "lora.target_modules=['q_proj','k_proj','v_proj','o_proj']"
ALL_LINEAR = ("lora.target_modules=['q_proj','k_proj','v_proj','o_proj',"
              "'gate_proj','up_proj','down_proj']")  # fmt: skip
HIDDEN, INTER, HEADS, KV = 2048, 8192, 32, 8

# name: (layers, vocab, heads)
MODELS = {"L2v128k": (2, 128256, HEADS), "L4v128k": (4, 128256, HEADS),
          "L4v32k": (4, 32000, HEADS), "L8v32k": (8, 32000, HEADS),
          "L4v32k_h16": (4, 32000, 16)}  # fmt: skip


def grid() -> list[tuple[str, str, list[str]]]:
    """(case name, model name, overrides)"""
    out = []

    def add(model: str, precision: str, seq: int, targets: str = "r8", gc: bool = False):
        tgt, rank = (ATTENTION, 8) if targets == "r8" else (ALL_LINEAR, 64)
        name = f"{model}-{precision}-s{seq}-{targets}{'-gc' if gc else ''}"
        out.append((name, model, ["run.batch_size=4", f"data.max_seq_len={seq}", tgt,
                                  f"lora.rank={rank}", f"run.precision='{precision}'",
                                  f"run.grad_checkpoint={'true' if gc else 'false'}"]))  # fmt: skip

    for model in ("L2v128k", "L4v128k", "L4v32k", "L8v32k"):
        for seq in (256, 512, 1024):
            add(model, "bf16", seq)
        add(model, "bf16", 512, "r64")
        add(model, "bf16", 512, gc=True)
    for model in ("L4v128k", "L8v32k"):
        add(model, "fp32", 256)
        add(model, "fp32", 512)
        add(model, "fp32", 512, "r64")
    add("L4v32k_h16", "bf16", 512)
    add("L4v32k_h16", "bf16", 1024)
    return out


def build(folder: Path, layers: int, vocab: int, heads: int) -> None:
    if (folder / "config.json").is_file():
        return
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_random_model.py"), str(folder),
                    "--hidden", str(HIDDEN), "--layers", str(layers), "--intermediate", str(INTER),
                    "--heads", str(heads), "--kv-heads", str(KV), "--vocab", str(vocab),
                    "--dtype", "bfloat16"], check=True)  # fmt: skip


def measure(args) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))}  # fmt: skip
    deadline = time.monotonic() + args.budget_s
    done = set()  # cases already in --out: a second call goes on where the first stopped
    if args.out.is_file():
        done = {json.loads(x)["case"] for x in args.out.read_text().splitlines() if x.strip()}
    with open(args.out, "a") as out:
        for name, model, overrides in grid():
            if name in done:
                continue
            if time.monotonic() > deadline:
                print(f"budget spent: stopped before {name}", flush=True)
                break
            layers, vocab, heads = MODELS[model]
            folder = args.models / model
            build(folder, layers, vocab, heads)
            run = subprocess.run(
                [sys.executable, "-m", "engine.model.memory_probe", str(folder), *overrides],
                capture_output=True, text=True, env=env, cwd=ROOT,
            )  # fmt: skip
            if run.returncode != 0:
                print(f"case={name} failed: {run.stderr.strip().splitlines()[-3:]}", flush=True)
                continue
            d = json.loads(run.stdout.strip().splitlines()[-1])
            d.update(case=name, layers=layers, vocab=vocab, heads=heads, hidden=HIDDEN,
                     inter=INTER, overrides=overrides)  # fmt: skip
            line = json.dumps(d)
            print(line, flush=True)
            out.write(line + "\n")
    return 0


def fit(path: Path) -> int:
    """Least squares of the measured activations per token on the model's terms."""
    import numpy as np

    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    for precision in ("bf16", "fp32"):
        sel = [r for r in rows if f"-{precision}-" in r["case"] and not r["case"].endswith("-gc")]
        if len(sel) < 4:
            continue
        cb = 2 if precision == "bf16" else 4
        x, y = [], []
        for r in sel:
            seq = int(r["case"].split("-s")[1].split("-")[0])
            tokens = r["micro_batch"] * seq
            b = r["breakdown"]
            fixed = b["gradients"] + b["optimizer_state"]  # built during the steps
            act = (r["peak_bytes"] - r["resident_bytes"] - fixed) / tokens
            L = r["layers"]
            x.append([cb * L * r["hidden"], cb * L * r["inter"], cb * L * r["heads"] * seq,
                      r["vocab"], cb * r["hidden"]])  # fmt: skip
            y.append(act)
        coef, *_ = np.linalg.lstsq(np.array(x, float), np.array(y, float), rcond=None)
        print(f"{precision}: per token = cb*L*({coef[0]:.2f}*hidden + {coef[1]:.2f}*inter + "
              f"{coef[2]:.2f}*heads*seq) + {coef[3]:.2f}*vocab + cb*{coef[4]:.2f}*hidden")  # fmt: skip
        pred = np.array(x, float) @ coef
        for r, p, t in zip(sel, pred, y, strict=True):
            print(f"  {r['case']:<28} measured/token={t:10.0f} fit={p:10.0f} "
                  f"estimate_ratio={r['ratio']:.3f}")  # fmt: skip
    for r in rows:
        if r["case"].endswith("-gc"):
            print(f"  {r['case']:<28} estimate_ratio={r['ratio']:.3f}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=Path("/tmp/orchard_memfit"))
    p.add_argument("--out", type=Path, default=Path("/tmp/memfit.jsonl"))
    p.add_argument("--budget-s", type=float, default=480)
    p.add_argument("--fit", type=Path, help="fit the lines of this file instead of measuring")
    args = p.parse_args()
    return fit(args.fit) if args.fit else measure(args)


if __name__ == "__main__":
    sys.exit(main())
