"""The torch side of the PEFT interop tests: transformers + peft logits, run in .venv-interop.

Standalone on purpose (no mlx, no engine): it runs with the interop venv's python, so torch
never enters the main environment. Inputs and outputs are .npy files.

    python peft_logits.py logits --base DIR [--peft DIR] [--cls LlamaForCausalLM] \
        --tokens tokens.npy --out logits.npy
    python peft_logits.py tiny-model --out DIR --config '{"vocab_size": 128, ...}'
    python peft_logits.py serve     # one JSON request a line on stdin, one reply a line

``serve`` imports torch once for many requests; each request is {"cmd": "logits" |
"tiny-model", ...the options above by name} and each reply {"ok": true} or {"error": text}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings

import numpy as np
import peft
import torch
import transformers

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)


def logits(base: str, tokens: str, out: str, peft_dir: str | None = None, cls: str = "") -> None:
    """Logits of the base model (with the PEFT adapter when given) on tokens (batch, seq)."""
    model_cls = getattr(transformers, cls or "AutoModelForCausalLM")
    model = model_cls.from_pretrained(base, dtype=torch.float32)
    if peft_dir:
        model = peft.PeftModel.from_pretrained(model, peft_dir)
    model.eval()
    with torch.no_grad():
        result = model(torch.from_numpy(np.load(tokens).astype(np.int64))).logits
    np.save(out, result.numpy().astype(np.float32))


def tiny_model(out: str, config: dict, cls: str = "Qwen2", seed: int = 0) -> None:
    """A randomly initialised model saved by transformers (``cls``Config/ForCausalLM)."""
    torch.manual_seed(seed)
    model_config = getattr(transformers, f"{cls}Config")(**config)
    getattr(transformers, f"{cls}ForCausalLM")(model_config).save_pretrained(out)


def handle(request: dict) -> dict:
    request = dict(request)
    command = request.pop("cmd", None)
    if command == "logits":
        logits(**request)
    elif command == "tiny-model":
        tiny_model(**request)
    else:
        return {"error": f"unknown cmd {command!r} (expected logits or tiny-model)"}
    return {"ok": True}


def serve() -> int:
    # Replies own the real stdout; anything a library prints goes to stderr instead.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    replies.write(json.dumps({"ready": True, "torch": torch.__version__}) + "\n")
    replies.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = handle(json.loads(line))
        except Exception:  # noqa: BLE001 - the caller gets the traceback as text
            reply = {"error": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    sys.stderr.flush()
    os._exit(0)  # nothing left to clean up; torch's interpreter teardown takes seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    one = sub.add_parser("logits", help="logits of a base model, with a PEFT adapter if given")
    one.add_argument("--base", required=True)
    one.add_argument("--peft", dest="peft_dir")
    one.add_argument("--cls", default="", help="transformers class (default: Auto)")
    one.add_argument("--tokens", required=True, help=".npy of int token ids (batch, seq)")
    one.add_argument("--out", required=True, help=".npy to write float32 logits to")
    tiny = sub.add_parser("tiny-model", help="save a random model made by transformers")
    tiny.add_argument("--out", required=True)
    tiny.add_argument("--config", required=True, help="JSON of the config's fields")
    tiny.add_argument("--cls", default="Qwen2")
    tiny.add_argument("--seed", type=int, default=0)
    sub.add_parser("serve", help="answer JSON requests, one a line, on stdin")
    args = vars(parser.parse_args(argv))
    command = args.pop("cmd")
    if command == "serve":
        return serve()
    if command == "tiny-model":
        args["config"] = json.loads(args["config"])
    reply = handle({"cmd": command, **args})
    if "error" in reply:
        print(reply["error"], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
