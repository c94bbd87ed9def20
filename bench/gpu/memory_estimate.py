"""engine/model/memory.py's estimate against the measured peak of a real step, at 1B scale.

The model is Llama-3.2-1B at its published shape (resources/model_configs/Llama-3.2-1B-Instruct:
16 layers, hidden 2048, MLP 8192, 32/8 heads, vocabulary 128,256; 1.24B parameters) with
random bf16 weights, built once into --model-dir. Each case runs in a fresh process
(``python -m engine.model.memory_probe``: the library trainer's compiled step and AdamW
update, two steps, peak from mx.get_peak_memory after the model is built) and prints

    case=<name> estimate_gb=<e> measured_gb=<m> ratio=<estimate/measured>

for rank 8 on attention and rank 64 on every linear layer, with and without gradient
checkpointing, in fp32 and bf16 compute. The last line is
``memory_ratio_min=<a> memory_ratio_max=<b>`` (the target band is 0.8-1.25).

Run on the GPU machine (MLX's CUDA backend, see /work/shared/gpu.md), from the repository root:
    PYTHONPATH=/tmp/site:$PWD python3 bench/gpu/memory_estimate.py [--model-dir /tmp/orchard_llama32_1b]
It also runs on a CPU (slowly): --batch and --seq make it small.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "resources" / "model_configs" / "Llama-3.2-1B-Instruct" / "config.json"
TOKENIZER = ROOT / "resources" / "models" / "stories260K"
ATTENTION = "lora.target_modules=['q_proj','k_proj','v_proj','o_proj']"
ALL_LINEAR = ("lora.target_modules=['q_proj','k_proj','v_proj','o_proj',"
              "'gate_proj','up_proj','down_proj']")  # fmt: skip


def build_model(folder: Path) -> None:
    """Random bf16 weights at the published shape, saved the way mlx-lm saves a model."""
    if (folder / "config.json").is_file():
        return
    sys.path.insert(0, str(ROOT))
    import mlx.core as mx
    from mlx_lm.models import llama
    from mlx_lm.utils import save_model

    config = json.loads(CONFIG.read_text())
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    model.set_dtype(mx.bfloat16)
    mx.eval(model.parameters())
    folder.mkdir(parents=True, exist_ok=True)
    save_model(folder, model)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TOKENIZER / name, folder / name)


def cases(batch: int, seq: int) -> dict[str, list[str]]:
    shape = [f"run.batch_size={batch}", f"data.max_seq_len={seq}"]
    out = {}
    for precision in ("fp32", "bf16"):
        for gc in (False, True):
            for name, targets, rank in (
                ("r8-attention", ATTENTION, 8),
                ("r64-all", ALL_LINEAR, 64),
            ):
                key = f"{name}-{precision}{'-gc' if gc else ''}"
                out[key] = [*shape, targets, f"lora.rank={rank}", f"run.precision='{precision}'",
                            f"run.grad_checkpoint={'true' if gc else 'false'}"]  # fmt: skip
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=Path("/tmp/orchard_llama32_1b"))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--only", help="run only the cases whose name contains this")
    args = p.parse_args()
    build_model(args.model_dir)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))}  # fmt: skip
    ratios = []
    for name, overrides in cases(args.batch, args.seq).items():
        if args.only and args.only not in name:
            continue
        run = subprocess.run(
            [sys.executable, "-m", "engine.model.memory_probe", str(args.model_dir), *overrides],
            capture_output=True, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        if run.returncode != 0:
            print(f"case={name} failed: {run.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        d = json.loads(run.stdout.strip().splitlines()[-1])
        ratios.append(d["ratio"])
        print(f"case={name} estimate_gb={d['estimate_bytes'] / 1e9:.2f} "
              f"measured_gb={d['peak_bytes'] / 1e9:.2f} ratio={d['ratio']:.3f}", flush=True)  # fmt: skip
    if not ratios:
        print("memory_ratio_min=nan memory_ratio_max=nan")
        return 1
    print(f"memory_ratio_min={min(ratios):.3f} memory_ratio_max={max(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
