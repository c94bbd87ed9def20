"""Shared fixtures: the real stories260K tokenizer, and a copy of it given a chat template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mlx_lm.tokenizer_utils import load as load_tokenizer

MODEL = Path(__file__).resolve().parents[2] / "resources" / "models" / "stories260K"
DEMO = Path(__file__).resolve().parents[2] / "resources" / "datasets" / "orchard_robot.jsonl"

# A small Zephyr-like template; the assistant turn ends with the EOS token.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# The same without EOS: turns close with plain text, and nothing is added to them.
TEMPLATE_NO_EOS = CHAT_TEMPLATE.replace("{{ eos_token }}", "")
# ChatML as Qwen2.5 base models have it: turns close with <|im_end|>, EOS is another token.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def with_template(tmp: Path, template: str, specials: tuple[str, ...] = ()):
    """The stories260K tokenizer with ``template``, plus ``specials`` as special tokens."""
    if specials:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(MODEL))
        hf.add_special_tokens({"additional_special_tokens": list(specials)})
        hf.save_pretrained(str(tmp))
    else:
        for f in MODEL.iterdir():
            if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
                shutil.copy(f, tmp / f.name)
    cfg = json.loads((tmp / "tokenizer_config.json").read_text())
    cfg["chat_template"] = template
    (tmp / "tokenizer_config.json").write_text(json.dumps(cfg))
    return load_tokenizer(tmp)


@pytest.fixture(scope="session")
def tok():
    return load_tokenizer(MODEL)


@pytest.fixture(scope="session")
def chat_tok(tmp_path_factory):
    return with_template(tmp_path_factory.mktemp("chat_tok"), CHAT_TEMPLATE)


@pytest.fixture(scope="session")
def chat_tok_no_eos(tmp_path_factory):
    return with_template(tmp_path_factory.mktemp("chat_tok_no_eos"), TEMPLATE_NO_EOS)


@pytest.fixture(scope="session")
def chatml_tok(tmp_path_factory):
    return with_template(
        tmp_path_factory.mktemp("chatml_tok"), CHATML, ("<|im_start|>", "<|im_end|>")
    )


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
