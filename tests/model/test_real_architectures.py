"""Real architectures from their published config.json (resources/model_configs/): Qwen2.5,
Qwen3, Llama 3.2, Gemma 2, Gemma 3, Mistral and Phi-3, at real widths, heads and vocabulary,
with reduced depth.

- Targets, LoRA and PEFT names on every module the model offers, with the real vocabulary:
  the model is built lazily (MLX allocates nothing until evaluated), so only the LoRA
  matrices are ever computed.
- QLoRA at group 64: every adapted module of the real widths quantizes (nothing is left in
  full precision), and the adapter reloads through mlx-lm's own load_adapters with the same
  logits, as LoRA and DoRA do (DoRA on the smaller three). These build one real-width layer
  (up to 218M parameters for Mistral), with the vocabulary cut to 2,048 rows: LoRA never
  touches the embedding, and filling 590M random embedding weights would cost half a minute
  a model on CPU. The four largest layers are marked slow.
- The chat template from each model's real tokenizer_config.json drives Orchard's masking,
  on a three-turn conversation (and a tool call where the template has tools): the training
  sequence is the template's own render, nothing added; the trained tokens are each answer
  through its end-of-turn token; the generation prompt is the training prefix of each answer.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm.tuner.utils import load_adapters

from engine.config import JobSpec, LoraSpec
from engine.data import Record, TurnEnd, encode_prompt, stop_token_ids, tokenize_record, turn_end
from engine.data.templates import TemplateError
from engine.export import export_peft, read_adapter
from engine.lora import apply_lora, layer_linear_names, save_adapter
from engine.model.inspect import is_supported, mlx_model_type
from engine.model.quantize import quantize_model

from .conftest import STORIES

CONFIGS = Path(__file__).resolve().parents[2] / "resources" / "model_configs"
LLAMA_LIKE = ["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj", "self_attn.k_proj",
              "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj"]  # fmt: skip
# Linear modules per layer, named as in transformers (what PEFT matches against).
MODULES = {
    "Qwen2.5-0.5B": LLAMA_LIKE,
    "Qwen3-0.6B": LLAMA_LIKE,
    "Llama-3.2-1B-Instruct": LLAMA_LIKE,
    "gemma-2-2b-it": LLAMA_LIKE,
    "gemma-3-1b-it": LLAMA_LIKE,
    "Mistral-7B-Instruct-v0.1": LLAMA_LIKE,
    "Phi-3-mini-4k-instruct": [
        "mlp.down_proj", "mlp.gate_up_proj", "self_attn.o_proj", "self_attn.qkv_proj",
    ],
}  # fmt: skip
HEAVY = {
    "Mistral-7B-Instruct-v0.1",
    "Phi-3-mini-4k-instruct",
    "gemma-2-2b-it",
    "Llama-3.2-1B-Instruct",
}
NAMES = sorted(MODULES)


def real_config(name: str, **changes: object) -> dict:
    return {**json.loads((CONFIGS / name / "config.json").read_text()), **changes}


def build(config: dict) -> nn.Module:
    """The mlx-lm model for a config, unevaluated (no weight exists until it is used)."""
    module = importlib.import_module(f"mlx_lm.models.{mlx_model_type(config)}")
    return module.Model(module.ModelArgs.from_dict(config))


def expected_shapes(config: dict) -> dict[str, tuple[int, int]]:
    """(in, out) of each module, from the config's own numbers."""
    h, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]  # fmt: skip
    hd = config.get("head_dim") or h // heads
    if config["model_type"] == "phi3":
        return {"self_attn.qkv_proj": (h, (heads + 2 * kv) * hd), "self_attn.o_proj": (heads * hd, h),
                "mlp.gate_up_proj": (h, 2 * inter), "mlp.down_proj": (inter, h)}  # fmt: skip
    return {"self_attn.q_proj": (h, heads * hd), "self_attn.k_proj": (h, kv * hd),
            "self_attn.v_proj": (h, kv * hd), "self_attn.o_proj": (heads * hd, h),
            "mlp.gate_proj": (h, inter), "mlp.up_proj": (h, inter), "mlp.down_proj": (inter, h)}  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_targets_lora_and_peft_names_at_real_widths_and_vocabulary(name, tmp_path):
    config = real_config(name, num_hidden_layers=2)
    assert is_supported(config), f"{name}: mlx-lm has no {mlx_model_type(config)}"
    model = build(config)
    assert layer_linear_names(model) == MODULES[name]
    shapes = expected_shapes(config)
    assert all(in_dim % 64 == 0 for in_dim, _ in shapes.values()), "QLoRA group 64 must fit"
    assert model.model.embed_tokens.weight.shape == (config["vocab_size"], config["hidden_size"])
    spec = LoraSpec(rank=8, alpha=16.0, target_modules=MODULES[name], layers=[0])
    report = apply_lora(model, spec, seed=0)  # layer 0 of 2: layer 1 is padding in the file
    assert report.trainable_params == 8 * sum(i + o for i, o in shapes.values())
    job = JobSpec()
    job.lora = spec
    adapter = save_adapter(model, tmp_path / "adapter", job, f"org/{name}")
    assert json.loads((adapter / "adapter_config.json").read_text())["model"] == f"org/{name}"
    out = export_peft(read_adapter(adapter), tmp_path / "peft")
    peft = mx.load(str(out / "adapter_model.safetensors"))
    expected = {}
    for module, (in_dim, out_dim) in shapes.items():
        prefix = f"base_model.model.model.layers.0.{module}"
        expected[f"{prefix}.lora_A.weight"] = (8, in_dim)
        expected[f"{prefix}.lora_B.weight"] = (out_dim, 8)
    assert {k: tuple(v.shape) for k, v in peft.items()} == expected
    peft_config = json.loads((out / "adapter_config.json").read_text())
    assert peft_config["target_modules"] == MODULES[name] and peft_config["layers_to_transform"] == [0]  # fmt: skip


def _filled(config: dict) -> tuple[nn.Module, list[tuple[str, mx.array]]]:
    """A model with cheap, non-degenerate weights: each matrix tiles a random block of 251
    rows (a full random fill of a 218M-parameter layer costs many seconds on CPU); norms keep
    their initial values."""
    model = build(config)
    key = mx.random.key(0)
    filled = []
    for path, value in tree_flatten(model.parameters()):
        if value.ndim != 2:
            continue
        key, sub = mx.random.split(key)
        rows, cols = value.shape
        block = 0.05 * mx.random.normal((min(rows, 251), cols), key=sub)
        filled.append((path, mx.tile(block, (-(-rows // block.shape[0]), 1))[:rows]))
    model.load_weights(filled, strict=False)
    mx.eval(model.parameters())
    return model, tree_flatten(model.parameters())


def _twin(config: dict, weights: list[tuple[str, mx.array]]) -> nn.Module:
    """A second model holding the same arrays (no copy), quantized where they are."""
    model = build(config)
    scales = {path.rsplit(".", 1)[0] for path, _ in weights if path.endswith(".scales")}
    if scales:  # the quantized layers' structure; the arrays come from ``weights``
        nn.quantize(model, group_size=64, bits=4, class_predicate=lambda p, _m: p in scales)
    model.load_weights(weights)
    return model


def _perturb(model: nn.Module) -> None:
    key = mx.random.key(1)
    updates = []
    for path, value in tree_flatten(model.trainable_parameters()):
        key, sub = mx.random.split(key)
        if path.endswith("lora_b"):
            updates.append((path, 0.05 * mx.random.normal(value.shape, key=sub)))
        elif path.endswith(".m"):  # DoRA magnitudes move too
            updates.append((path, value * (1 + 0.1 * mx.random.normal(value.shape, key=sub))))
    model.load_weights(updates, strict=False)
    mx.eval(model.parameters())


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in NAMES]
)
def test_lora_qlora_dora_adapters_load_in_mlx_lm_with_identical_logits(name, tmp_path):
    # gemma3_text indexes its layer caches by the sliding-window pattern: with one layer,
    # that layer is the global one
    config = real_config(name, num_hidden_layers=1, vocab_size=2048, sliding_window_pattern=1)
    float_model, weights = _filled(config)
    report = quantize_model(float_model, bits=4, group_size=64)  # QLoRA at group 64
    assert not [p for p in report.skipped if ".layers." in p], report.skipped
    bases = {"lora": weights, "qlora": tree_flatten(float_model.parameters())}
    if name not in HEAVY:  # DoRA rebuilds W + BA per module each forward: slow on CPU
        bases["dora"] = weights
    tokens = mx.array([[1, 300, 1999, 42]])
    before = {}
    for kind, base in bases.items():
        model = _twin(config, base)
        before.setdefault(id(base), model(tokens))
        spec = LoraSpec(rank=8, alpha=16.0, target_modules=MODULES[name],
                        type="dora" if kind == "dora" else "lora")  # fmt: skip
        apply_lora(model, spec, seed=0)
        _perturb(model)
        model.eval()
        expected = model(tokens)
        assert mx.abs(before[id(base)] - expected).max().item() > 1e-3, f"{name} {kind}: no effect"
        job = JobSpec()
        job.lora = spec
        save_adapter(model, tmp_path / kind, job, f"org/{name}")
        reference = _twin(config, base)
        load_adapters(reference, str(tmp_path / kind))  # what mlx_lm.load(..., adapter_path) runs
        reference.eval()
        assert mx.array_equal(reference(tokens), expected).item(), f"{name} {kind}: logits differ"


def template_tokenizer(name: str, tmp: Path):
    """The stories260K tokenizer given the real model's chat template and special tokens
    (and Qwen3's <think> and </think> as plain added tokens, as its real tokenizer has them:
    mlx-lm then renders with thinking on, as it does for the real model)."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer
    from transformers import AutoTokenizer

    real = json.loads((CONFIGS / name / "tokenizer_config.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(STORIES))
    specials = set(re.findall(r"<\|[a-z_]+\|>|<(?:start|end)_of_turn>", real["chat_template"]))
    specials |= {t for t in (real["bos_token"], real["eos_token"]) if t}
    tok.add_special_tokens({"additional_special_tokens": sorted(specials)})
    tok.add_tokens([t for t in ("<think>", "</think>") if t in real["chat_template"]])
    tok.bos_token = real["bos_token"] or tok.bos_token
    tok.eos_token = real["eos_token"]
    tok.chat_template = real["chat_template"]
    tok.save_pretrained(str(tmp))
    return load_tokenizer(tmp)


SYSTEM_REFUSED = {"gemma-2-2b-it": "System role not supported",
                  "Mistral-7B-Instruct-v0.1": "Conversation roles must alternate"}  # fmt: skip
# The token each template closes an assistant turn with (read from the templates above):
# the last trained token of every answer, and where generation stops.
END_OF_TURN = {"Llama-3.2-1B-Instruct": "<|eot_id|>", "Mistral-7B-Instruct-v0.1": "</s>",
               "Phi-3-mini-4k-instruct": "<|end|>", "Qwen2.5-0.5B": "<|im_end|>",
               "Qwen3-0.6B": "<|im_end|>", "gemma-2-2b-it": "<end_of_turn>",
               "gemma-3-1b-it": "<end_of_turn>"}  # fmt: skip
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Who is Pip?"},
    {"role": "assistant", "content": "Pip is a robot."},
    {"role": "user", "content": "Where does he live?"},
    {"role": "assistant", "content": "In an apple orchard."},
    {"role": "user", "content": "What does he do?"},
    {"role": "assistant", "content": "He picks apples."},
]
TOOLS = [{"type": "function", "function": {"name": "pick", "description": "Pick an apple",
          "parameters": {"type": "object", "properties": {"tree": {"type": "string"}}}}}]  # fmt: skip
TOOL_CONVERSATION = [
    {"role": "user", "content": "Pick an apple from tree 3."},
    {"role": "assistant", "content": "",
     "tool_calls": [{"type": "function", "function": {"name": "pick", "arguments": {"tree": "3"}}}]},
    {"role": "tool", "content": "picked"},
    {"role": "assistant", "content": "Done: one apple."},
]  # fmt: skip
TOOL_TEMPLATES = {"Llama-3.2-1B-Instruct", "Qwen2.5-0.5B", "Qwen3-0.6B"}


def template_masks(tok, messages: list[dict], tools: list | None, end: int) -> np.ndarray:
    """The weights the template itself implies, from mlx-lm's tokenization alone: each answer
    is trained from the end of its generation prompt through the first end-of-turn token."""
    tokens = tok.apply_chat_template(messages, tools=tools)
    weights = np.zeros(len(tokens), dtype=np.uint8)
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            prompt = tok.apply_chat_template(messages[:i], tools=tools, add_generation_prompt=True)
            assert tokens[: len(prompt)] == prompt, f"turn {i}: the prompt is not a prefix"
            weights[len(prompt) : tokens.index(end, len(prompt)) + 1] = 1
    return weights


@pytest.mark.parametrize("name", NAMES)
def test_real_chat_templates_train_exactly_what_the_template_renders(name, tmp_path):
    tok = template_tokenizer(name, tmp_path)
    end = tok.convert_tokens_to_ids(END_OF_TURN[name])
    assert turn_end(tok) == TurnEnd(END_OF_TURN[name], end)
    assert end in stop_token_ids(tok)  # generation stops where the answers' training stops
    messages = CONVERSATION
    if name in SYSTEM_REFUSED:  # the template itself refuses a system turn: said, not crashed
        with pytest.raises(TemplateError, match=SYSTEM_REFUSED[name]):
            tokenize_record(Record("chat.jsonl", 3, messages=messages), tok)
        messages = messages[1:]
    cases = [(messages, None)] + ([(TOOL_CONVERSATION, TOOLS)] if name in TOOL_TEMPLATES else [])
    for msgs, tools in cases:
        record = Record("chat.jsonl", 3, messages=msgs, tools=tools)
        tokens, weights, stable = tokenize_record(record, tok)
        assert stable, f"{name}: every turn of a multi-turn conversation is trained"
        # the training sequence is the template's own render, with nothing added (no EOS
        # where the template has none), and only each answer and its end-of-turn are trained
        assert tokens.tolist() == tok.apply_chat_template(msgs, tools=tools)
        expected = template_masks(tok, msgs, tools, end)
        assert weights[1:].tolist() == expected[1:].tolist()
        answers = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
        assert tokens[weights == 1].tolist().count(end) == len(answers)
        for i in answers:  # generation renders exactly the tokens training saw before an answer
            prompt = encode_prompt(msgs[:i], tok, tools)
            assert tokens[: len(prompt)].tolist() == prompt and weights[len(prompt)] == 1
        trained = tok.decode(tokens[weights == 1].tolist())
        prompt_text = tok.decode(tokens[weights == 0].tolist())
        for m in msgs:
            text = m["content"]
            if text and m["role"] == "assistant":
                assert text in trained and text not in prompt_text, f"{name}: {text}"
            elif text and m["role"] in ("user", "system"):
                assert text not in trained, f"{name}: {text}"
        if tools:
            assert '"pick"' in trained and "picked" not in trained
        _, unmasked, _ = tokenize_record(record, tok, mask_prompt=False)
        assert unmasked[0] == 0 and unmasked[1:].all()
    if name == "Qwen2.5-0.5B":  # its EOS is <|endoftext|>: never rendered, never trained
        assert tok.eos_token_id not in tokens.tolist() and tok.eos_token_id != end
