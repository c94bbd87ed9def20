"""Build a random-weight model at a real architecture's shape, saved as an mlx-lm/HF folder.

For benchmarks and tests that need real sizes without a download: a Llama or Qwen2 shape
(from a published config.json, or from --hidden/--layers/... ), random weights in the dtype
asked for, and the demo model's tokenizer (vocabulary 512 unless --vocab says otherwise; the
embedding may be wider than the tokenizer, never narrower) with a plain chat template added. The folder loads with
``mlx_lm.load`` and ``orchard train`` like any downloaded model. It is NOT a trained model.

    python scripts/make_random_model.py OUT --hidden 512 --layers 8            # ~26M, Llama
    python scripts/make_random_model.py OUT --hidden 2048 --layers 16 --intermediate 8192 \\
        --heads 32 --kv-heads 16 --dtype bfloat16                            # ~1.0B, bf16
    python scripts/make_random_model.py OUT --config path/to/config.json --layers 4
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "resources" / "models" / "stories260K"
TOKENIZER_FILES = ("tokenizer.json", "special_tokens_map.json")
# A plain chat template, so chat datasets tokenize the same way in Orchard and mlx-lm (the
# demo tokenizer has none, and mlx-lm needs one for chat and prompt/completion data).
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '</s>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
DTYPES = ("float32", "bfloat16", "float16")


def model_config(args: argparse.Namespace) -> dict:
    """The config.json of the model to build: a published one, overridden by the flags."""
    cfg: dict = {}
    if args.config:
        cfg = json.loads(Path(args.config).read_text(encoding="utf-8"))
    arch = args.arch or cfg.get("model_type", "llama")
    if arch not in ("llama", "qwen2"):
        raise SystemExit(f"--arch: expected llama or qwen2, got {arch!r}")
    hidden = args.hidden or cfg.get("hidden_size", 512)
    heads = args.heads or cfg.get("num_attention_heads", max(1, hidden // 64))
    if hidden % heads:
        raise SystemExit(f"--heads: {heads} does not divide --hidden {hidden}")
    kv = args.kv_heads or cfg.get("num_key_value_heads", heads)
    if heads % kv:
        raise SystemExit(f"--kv-heads: {kv} does not divide --heads {heads}")
    intermediate = args.intermediate or cfg.get("intermediate_size", _mlp_width(hidden))
    cfg.update(
        model_type=arch,
        architectures=["LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"],
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=args.layers or cfg.get("num_hidden_layers", 8),
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=hidden // heads,
        vocab_size=args.vocab,
        max_position_embeddings=max(args.max_positions, cfg.get("max_position_embeddings", 0)),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
        rope_theta=cfg.get("rope_theta", 10000.0),
        tie_word_embeddings=args.tie if args.tie is not None else cfg.get("tie_word_embeddings", False),
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype=args.dtype,
    )  # fmt: skip
    for key in ("quantization", "quantization_config", "rope_scaling", "auto_map"):
        cfg.pop(key, None)
    return cfg


def _mlp_width(hidden: int) -> int:
    """Llama's rule: 2/3 of 4x hidden, rounded up to a multiple of 64."""
    return -(-int(8 * hidden / 3) // 64) * 64


def build(cfg: dict, dtype: str, seed: int, out: Path) -> int:
    """Write the folder; returns the parameter count."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.utils import save_model

    mx.random.seed(seed)
    arch = importlib.import_module(f"mlx_lm.models.{cfg['model_type']}")
    model = arch.Model(arch.ModelArgs.from_dict(cfg))
    # a small normal init (like HF's initializer_range 0.02) keeps activations finite in bf16
    std = 0.02
    model.update(
        tree_map(lambda p: mx.random.normal(p.shape) * std if p.ndim > 1 else p, model.parameters())
    )
    model.set_dtype(getattr(mx, dtype))
    mx.eval(model.parameters())
    n = sum(v.size for _, v in tree_flatten(model.parameters()))
    out.mkdir(parents=True, exist_ok=True)
    save_model(out, model)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    for name in TOKENIZER_FILES:
        shutil.copy(TOKENIZER / name, out / name)
    tok_cfg = json.loads((TOKENIZER / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok_cfg["chat_template"] = CHAT_TEMPLATE
    tok_cfg["model_max_length"] = cfg["max_position_embeddings"]
    (out / "tokenizer_config.json").write_text(
        json.dumps(tok_cfg, indent=2) + "\n", encoding="utf-8"
    )
    (out / "README.md").write_text(
        f"Random weights (seed {seed}) at a {cfg['model_type']} shape, {n:,} parameters, "
        f"{dtype}. Made by scripts/make_random_model.py for benchmarks: not a trained model.\n",
        encoding="utf-8",
    )
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder to write (created)")
    p.add_argument("--config", help="a published config.json to take the shape from")
    p.add_argument("--arch", choices=("llama", "qwen2"), help="default: llama, or the config's")
    p.add_argument("--hidden", type=int, help="hidden size (default 512, or the config's)")
    p.add_argument("--layers", type=int, help="number of layers (default 8, or the config's)")
    p.add_argument("--intermediate", type=int, help="MLP width (default Llama's 8/3 x hidden)")
    p.add_argument("--heads", type=int, help="attention heads (default hidden / 64)")
    p.add_argument("--kv-heads", type=int, help="key/value heads (default = heads)")
    p.add_argument(
        "--vocab", type=int, default=512, help="embedding rows (>= 512, the tokenizer's)"
    )
    p.add_argument("--max-positions", type=int, default=4096)
    p.add_argument("--tie", action=argparse.BooleanOptionalAction, default=None,
                   help="tie the output layer to the embedding")  # fmt: skip
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.vocab < 512:
        p.error("--vocab: the demo tokenizer has 512 tokens; expected >= 512")
    cfg = model_config(args)
    n = build(cfg, args.dtype, args.seed, args.out)
    print(f"{args.out}: {cfg['model_type']} {n:,} parameters ({n / 1e6:.1f}M), {args.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
