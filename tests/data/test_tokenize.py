"""Tokenization and prompt masks with the real stories260K tokenizer, with and without a chat template."""

from __future__ import annotations

import numpy as np

from engine.data import (
    ProblemLog,
    Record,
    encode_prompt,
    preview_record,
    read_dataset,
    stop_at_turn_end,
    stop_token_ids,
    tokenize_record,
    tokenize_records,
    turn_end,
)
from tests.data.conftest import CHAT_TEMPLATE, CHATML, with_template, write_jsonl

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


def _runs(tok, tokens, weights):
    """The decoded text of each run of trained tokens."""
    cuts = np.flatnonzero(np.diff(np.concatenate([[0], weights.astype(int), [0]])))
    return [tok.decode(tokens[a:b].tolist()) for a, b in zip(cuts[::2], cuts[1::2], strict=True)]


def _answer_starts(tok, messages, tokens, weights):
    """Each answer's generation prompt (encode_prompt) is exactly the tokens before it, and
    the answer's first token is the first trained one after it."""
    starts = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = encode_prompt(messages[:i], tok)
        assert tokens[: len(prompt)].tolist() == prompt, f"turn {i}"
        assert weights[len(prompt)] == 1 and weights[len(prompt) - 1] == 0, f"turn {i}"
        starts.append(len(prompt))
    return starts


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


def test_chatml_turns_train_their_own_end_token_and_no_eos(chatml_tok):
    # Qwen2.5 base: turns close with <|im_end|>, EOS (here </s>) is never rendered
    tok = chatml_tok
    tokens, weights, stable = tokenize_record(Record("f", 1, messages=CONV), tok)
    assert stable
    assert tokens.tolist() == tok.apply_chat_template(CONV)  # the template's own tokens
    assert tok.eos_token_id not in tokens.tolist()
    assert _runs(tok, tokens, weights) == [
        "Pip is a robot.<|im_end|>",
        "Pip lives in an apple orchard.<|im_end|>",
    ]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert weights[tokens == im_end].tolist() == [0, 0, 1, 0, 1]  # system, user: prompt
    assert len(_answer_starts(tok, CONV, tokens, weights)) == 2
    assert turn_end(tok).text == "<|im_end|>" and stop_token_ids(tok) == {tok.eos_token_id, im_end}
    _, weights, _ = tokenize_record(Record("f", 1, messages=CONV), tok, mask_prompt=False)
    assert weights[0] == 0 and weights[1:].all()


def test_generation_stops_where_training_ends_answers(tmp_path):
    tok = with_template(tmp_path, CHATML, ("<|im_start|>", "<|im_end|>"))
    assert tok.eos_token_ids == {tok.eos_token_id}
    stop_at_turn_end(tok)  # what mlx_lm.generate stops on
    assert tok.eos_token_ids == {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}


def test_template_closing_answers_with_plain_text_gets_nothing_added(chat_tok_no_eos):
    tok = chat_tok_no_eos
    tokens, weights, _ = tokenize_record(Record("f", 1, messages=CONV), tok)
    assert tokens.tolist() == tok.apply_chat_template(CONV)
    assert tok.eos_token_id not in tokens.tolist() and turn_end(tok) is None
    assert _runs(tok, tokens, weights) == ["Pip is a robot.", "Pip lives in an apple orchard."]
    _answer_starts(tok, CONV, tokens, weights)
    log = ProblemLog()
    _, counts = tokenize_records([Record("f", 1, messages=CONV)] * 3, tok, 512, True, log)
    assert counts.no_turn_end and log.warnings == 1
    assert "closes an answer with no special token" in str(log.kept[0])


def test_text_between_the_answer_and_the_turn_end_is_trained(tmp_path):
    # a template that decorates only the final answer still renders every turn as written
    tpl = CHAT_TEMPLATE.replace(
        "{{ m['content'] }}",
        "{{ m['content'] }}{% if loop.last and m['role'] == 'assistant' %}!{% endif %}",
    )
    tok = with_template(tmp_path, tpl)
    tokens, weights, stable = tokenize_record(Record("f", 1, messages=CONV), tok)
    assert stable and tokens.tolist() == tok.apply_chat_template(CONV)
    assert _runs(tok, tokens, weights) == [
        "Pip is a robot.</s>",
        "Pip lives in an apple orchard.!</s>",
    ]


def test_template_that_is_not_prefix_stable_trains_the_last_turn(tmp_path):
    # the system line disappears once the conversation is long: the first answer's
    # generation prompt is not how the full conversation starts
    tpl = CHAT_TEMPLATE.replace(
        "{% for m in messages %}",
        "{% for m in messages %}{% if m['role'] != 'system' or messages|length < 4 %}",
    ).replace("{% endfor %}", "{% endif %}{% endfor %}")
    tok = with_template(tmp_path, tpl)
    log = ProblemLog()
    data, counts = tokenize_records([Record("f", 1, messages=CONV)], tok, 512, True, log)
    assert counts.template_unstable == 1 and log.warnings == 1
    assert data.tokens[0].tolist() == tok.apply_chat_template(CONV)
    assert _runs(tok, *data[0]) == ["Pip lives in an apple orchard.</s>"]


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


def test_encode_prompt_matches_training(tok, chat_tok, chatml_tok):
    for t in (tok, chat_tok, chatml_tok):
        tokens, weights, _ = tokenize_record(Record("f", 1, messages=CONV), t)
        prompt = encode_prompt(CONV[:-1], t)
        assert tokens[: len(prompt)].tolist() == prompt
        assert weights[len(prompt)] == 1 and not weights[len(prompt) - 3 : len(prompt)].any()
        assert len(_answer_starts(t, CONV, tokens, weights)) == 2


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


def test_every_format_that_becomes_chat_renders_as_the_template(tmp_path, chatml_tok):
    tok = chatml_tok
    rows = {
        "alpaca": {
            "instruction": "What next?",
            "input": "Pip has a basket.",
            "output": "He fills it.",
            "system": "You tell stories.",
            "history": [["Who is Pip?", "A robot."]],
        },
        "sharegpt": {
            "conversations": [
                {"from": "human", "value": "Who is Pip?"},
                {"from": "gpt", "value": "A robot."},
                {"from": "human", "value": "What next?"},
                {"from": "gpt", "value": "He fills it."},
            ],
            "system": "You tell stories.",
        },
        "chat": {"messages": CONV},
        "completion": {"prompt": "Pip is", "completion": " a robot."},
    }
    for fmt, row in rows.items():
        result = read_dataset(write_jsonl(tmp_path / f"{fmt}.jsonl", [row]))
        assert result.format == fmt and result.problems.total == 0, fmt
        log = ProblemLog()
        data, _ = tokenize_records(result.records, tok, 512, True, log)
        assert log.total == 0, fmt
        messages = result.records[0].messages
        tokens, weights = data[0]
        assert tokens.tolist() == tok.apply_chat_template(messages), fmt
        answers = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
        assert _runs(tok, tokens, weights) == [
            tok.decode(tok.encode(a, add_special_tokens=False)) for a in answers
        ], fmt
        _answer_starts(tok, messages, tokens, weights)
    text = read_dataset(write_jsonl(tmp_path / "text.jsonl", [{"text": "Pip is a robot."}]))
    tokens, weights, _ = tokenize_record(text.records[0], tok)  # no template: EOS is its stop
    assert tokens[0] == tok.bos_token_id and tokens[-1] == tok.eos_token_id and weights[-1] == 1
