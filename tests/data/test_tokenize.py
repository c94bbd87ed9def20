"""Tokenization and prompt masks with the real stories260K tokenizer, with and without a chat template."""

from __future__ import annotations

import numpy as np

from engine.data import (
    ProblemLog,
    Record,
    encode_prompt,
    preview_record,
    tokenize_record,
    tokenize_records,
)
from tests.data.conftest import CHAT_TEMPLATE, with_template

CONV = [
    {"role": "system", "content": "Be kind."},
    {"role": "user", "content": "Who is Pip?"},
    {"role": "assistant", "content": "Pip is a robot."},
    {"role": "user", "content": "Where does he live?"},
    {"role": "assistant", "content": "Pip lives in an apple orchard."},
]


def _enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


def _trained(tokens, weights):
    return [int(t) for t, w in zip(tokens, weights, strict=False) if w]


def test_fallback_masks_are_exact(tok):
    rec = Record("f", 1, messages=CONV[1:3])
    tokens, weights, _ = tokenize_record(rec, tok)
    prompt = [tok.bos_token_id] + _enc(tok, "### Instruction: Who is Pip?\n### Response:")
    answer = _enc(tok, " Pip is a robot.") + [tok.eos_token_id]
    assert tokens.tolist() == prompt + answer
    assert weights.tolist() == [0] * len(prompt) + [1] * len(answer)
    assert tokens.dtype == np.int32 and weights.dtype == np.uint8
    assert tok.decode(_trained(tokens, weights)) == "Pip is a robot.</s>"


def test_fallback_multi_turn_trains_every_answer_and_its_eos(tok):
    tokens, weights, _ = tokenize_record(Record("f", 1, messages=CONV), tok)
    assert (
        tok.decode(_trained(tokens, weights))
        == "Pip is a robot.</s> Pip lives in an apple orchard.</s>"
    )
    eos_at = np.flatnonzero(tokens == tok.eos_token_id)
    assert len(eos_at) == 2 and weights[eos_at].tolist() == [1, 1]
    text = tok.decode(tokens.tolist())
    assert text.startswith(
        "<s> ### System: Be kind.\n### Instruction: Who is Pip?\n### Response: Pip is"
    )


def test_mask_prompt_off_trains_everything_but_the_first_token(tok):
    tokens, weights, _ = tokenize_record(Record("f", 1, messages=CONV), tok, mask_prompt=False)
    assert weights[0] == 0 and weights[1:].all()


def test_text_record(tok):
    tokens, weights, _ = tokenize_record(Record("f", 1, text="Pip likes apples."), tok)
    assert tokens[0] == tok.bos_token_id and tokens[-1] == tok.eos_token_id
    assert weights.tolist() == [0] + [1] * (len(tokens) - 1)


def test_chat_template_masks(chat_tok):
    tokens, weights, stable = tokenize_record(Record("f", 1, messages=CONV), chat_tok)
    assert stable
    full = chat_tok.apply_chat_template(CONV, tokenize=False)
    assert tokens.tolist() == _enc(chat_tok, full)  # exactly the template's own tokens
    assert (
        chat_tok.decode(_trained(tokens, weights))
        == "Pip is a robot.</s>Pip lives in an apple orchard.</s>"
    )
    prompt = _enc(
        chat_tok, chat_tok.apply_chat_template(CONV[:2], tokenize=False, add_generation_prompt=True)
    )
    assert tokens[: len(prompt)].tolist() == prompt and not weights[: len(prompt)].any()
    assert weights[len(prompt)] == 1


def test_chat_template_without_eos_gets_one_per_answer(chat_tok_no_eos):
    tokens, weights, _ = tokenize_record(Record("f", 1, messages=CONV), chat_tok_no_eos)
    eos_at = np.flatnonzero(tokens == chat_tok_no_eos.eos_token_id)
    assert len(eos_at) == 2 and weights[eos_at].all()
    assert (
        chat_tok_no_eos.decode(_trained(tokens, weights))
        == "Pip is a robot.</s>Pip lives in an apple orchard.</s>"
    )


def test_template_that_is_not_prefix_stable_trains_the_last_turn(tmp_path):
    tpl = CHAT_TEMPLATE.replace(
        "{{ m['content'] }}",
        "{{ m['content'] }}{% if loop.last and m['role'] == 'assistant' %}.{% endif %}",
    )
    tok = with_template(tmp_path, tpl)
    log = ProblemLog()
    data, counts = tokenize_records([Record("f", 1, messages=CONV)], tok, 512, True, log)
    assert counts.template_unstable == 1 and log.warnings == 1
    assert tok.decode(_trained(*data[0])) == "Pip lives in an apple orchard..</s>"


def test_template_that_refuses_a_record_is_a_problem(tmp_path):
    tpl = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        + CHAT_TEMPLATE
    )
    tok = with_template(tmp_path, tpl)
    log = ProblemLog()
    data, _ = tokenize_records(
        [Record("f.jsonl", 7, messages=CONV), Record("f.jsonl", 8, messages=CONV[1:])],
        tok,
        512,
        True,
        log,
    )
    assert len(data) == 1 and log.errors == 1
    assert str(log.kept[0]).startswith(
        "f.jsonl:7: the chat template refused this conversation: no system role"
    )


def test_truncation_and_records_left_without_targets(tok):
    long_answer = Record(
        "f", 1, messages=[CONV[1], {"role": "assistant", "content": "Pip likes apples. " * 40}]
    )
    long_prompt = Record("f", 2, messages=[{"role": "user", "content": "apple " * 100}, CONV[2]])
    log = ProblemLog()
    data, counts = tokenize_records([long_answer, long_prompt], tok, 64, True, log)
    assert counts.truncated == 2 and counts.no_target == 1 and len(data) == 1
    assert len(data.tokens[0]) == 64 and data.sources == [("f", 1)]
    assert "f:2: no trained token within max_seq_len=64" in str(log.kept[0])


def test_encode_prompt_matches_training(tok, chat_tok):
    for t in (tok, chat_tok):
        tokens, weights, _ = tokenize_record(Record("f", 1, messages=CONV), t)
        prompt = encode_prompt(CONV[:-1], t)
        assert tokens[: len(prompt)].tolist() == prompt
        assert weights[len(prompt)] == 1 and not weights[len(prompt) - 3 : len(prompt)].any()


def test_preview_shows_what_the_model_sees(tok, chat_tok):
    rec = Record("f", 1, messages=CONV[1:3])
    segs = preview_record(rec, tok)
    assert segs == [
        ("<s> ### Instruction: Who is Pip?\n### Response:", False),
        (" Pip is a robot.</s>", True),
    ]
    segs = preview_record(Record("f", 1, messages=CONV), chat_tok)
    assert [t for t, trained in segs if trained] == [
        "Pip is a robot.</s>",
        "Pip lives in an apple orchard.</s>",
    ]
    assert "".join(t for t, _ in segs) == chat_tok.decode(
        tokenize_record(Record("f", 1, messages=CONV), chat_tok)[0].tolist()
    )
