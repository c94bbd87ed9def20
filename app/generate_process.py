"""The generation child process: ``python -m app.generate_process`` (prompt on stdin).

Runs outside the app's process so MLX never shares the GUI's interpreter. The model is
loaded exactly as the run loaded it (the run's job.toml: QLoRA quantization included), the
adapter is attached the way mlx-lm reads it, and the prompt is encoded as training rendered
conversations (engine.data.encode_prompt), then mlx_lm's own ``generate`` writes the answer.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.no_torch import keep_torch_out

log = logging.getLogger(__name__)


def model_spec_for(model: str, adapter: str):  # -> engine.config.ModelSpec
    """The run's model settings when the adapter sits in a run folder, else just the path."""
    from engine.config import ConfigError, JobSpec, ModelSpec

    job_file = Path(adapter).parent / "job.toml" if adapter else None
    if job_file is not None and job_file.is_file():
        try:
            return JobSpec.load(job_file).model
        except ConfigError as e:
            log.warning("ignoring %s: %s", job_file, e)
    return ModelSpec(path=model)


def generate_text(model: str, prompt: str, max_tokens: int, adapter: str = "") -> str:
    from mlx_lm import generate
    from mlx_lm.sample_utils import make_sampler

    from engine.data import encode_prompt, stop_at_turn_end
    from engine.lora import load_adapter
    from engine.model.load import load_model

    loaded = load_model(model_spec_for(model, adapter))
    if adapter:
        load_adapter(loaded.model, adapter)
    stop_at_turn_end(loaded.tokenizer)  # the answer ends where training ended it
    ids = encode_prompt([{"role": "user", "content": prompt}], loaded.tokenizer)
    return generate(
        loaded.model,
        loaded.tokenizer,
        prompt=ids,
        max_tokens=max_tokens,
        sampler=make_sampler(temp=0.0),
    )


def main(argv: list[str] | None = None) -> int:
    keep_torch_out()  # before mlx-lm imports transformers (engine/no_torch.py)
    parser = argparse.ArgumentParser(description="Generate one answer (used by the Results page)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--adapter", default="")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    prompt = sys.stdin.read()
    try:
        text = generate_text(args.model, prompt, args.max_tokens, args.adapter)
    except Exception as e:  # noqa: BLE001 - the app shows this one line to the user
        sys.stderr.write(f"{type(e).__name__}: {e}\n")
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
