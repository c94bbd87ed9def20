"""Generate with and without an adapter, from the same prompt, built as training built it.

Used by `orchard demo` (before/after samples) and by the app's generation process. Greedy
decoding, so the same model and prompt always give the same text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from engine.config import ModelSpec

log = logging.getLogger(__name__)

DEMO_PROMPTS = ("Tell me a story about Pip.",)


@dataclass(frozen=True)
class Sample:
    title: str
    prompt: str
    text: str


def generate_text(model: object, tokenizer: object, prompt: str, max_tokens: int = 80) -> str:
    """Greedy completion of one user prompt rendered with the training template."""
    from mlx_lm import generate

    from engine.data import encode_prompt, stop_at_turn_end

    stop_at_turn_end(tokenizer)  # the answer ends where training ended it
    ids = encode_prompt([{"role": "user", "content": prompt}], tokenizer)
    return generate(model, tokenizer, ids, max_tokens=max_tokens, verbose=False).strip()


def compare_with_adapter(
    model_spec: ModelSpec,
    adapter_dir: str | Path,
    prompts: tuple[str, ...] = DEMO_PROMPTS,
    max_tokens: int = 80,
) -> list[Sample]:
    """Base model and base + adapter side by side on the same prompts."""
    from engine.lora import load_adapter
    from engine.model import load_model

    loaded = load_model(model_spec)
    out = [
        Sample("base model", p, generate_text(loaded.model, loaded.tokenizer, p, max_tokens))
        for p in prompts
    ]
    load_adapter(loaded.model, adapter_dir)
    loaded.model.eval()
    out += [
        Sample("with the adapter", p, generate_text(loaded.model, loaded.tokenizer, p, max_tokens))
        for p in prompts
    ]
    return out
