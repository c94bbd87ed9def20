"""Record-level checks per format, with records written from each format's public description."""

from __future__ import annotations

import json

from engine.data import read_dataset
from tests.data.conftest import write_jsonl


def _msgs(result) -> list[str]:
    return [str(p) for p in result.problems.kept]


def test_alpaca_with_system_and_history(tmp_path):
    # LLaMA-Factory's alpaca description: instruction, input, output, system, history
    row = {
        "instruction": "What next?",
        "input": "Pip has a basket.",
        "output": "He fills it.",
        "system": "You tell stories.",
        "history": [["Who is Pip?", "A robot."]],
    }
    r = read_dataset(write_jsonl(tmp_path / "a.jsonl", [row]))
    assert r.format == "alpaca" and r.problems.total == 0
    assert r.records[0].messages == [
        {"role": "system", "content": "You tell stories."},
        {"role": "user", "content": "Who is Pip?"},
        {"role": "assistant", "content": "A robot."},
        {"role": "user", "content": "What next?\n\nPip has a basket."},
        {"role": "assistant", "content": "He fills it."},
    ]


def test_sharegpt_with_tools(tmp_path):
    tools = json.dumps([{"name": "pick", "parameters": {"type": "object"}}])
    row = {
        "conversations": [
            {"from": "human", "value": "Pick an apple."},
            {"from": "function_call", "value": '{"name": "pick", "arguments": {}}'},
            {"from": "observation", "value": "picked"},
            {"from": "gpt", "value": "Done."},
        ],
        "system": "You are Pip.",
        "tools": tools,
    }
    r = read_dataset(write_jsonl(tmp_path / "s.jsonl", [row]))
    assert r.format == "sharegpt" and r.problems.total == 0
    rec = r.records[0]
    assert [m["role"] for m in rec.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert rec.tools == json.loads(tools)


def test_sharegpt_aliases(tmp_path):
    row = {
        "conversations": [{"from": "user", "value": "Hi"}, {"from": "assistant", "value": "Hello"}]
    }
    row2 = {
        "conversations": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    }
    r = read_dataset(write_jsonl(tmp_path / "s.jsonl", [row, row2]))
    assert r.problems.total == 0 and len(r.records) == 2


def test_openai_chat_with_text_parts(tmp_path):
    row = {
        "messages": [
            {"role": "system", "content": "Marv is a factual chatbot that is also sarcastic."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What's the capital"},
                    {"type": "text", "text": "of France?"},
                ],
            },
            {"role": "assistant", "content": "Paris, as if everyone doesn't know that already."},
        ]
    }
    r = read_dataset(write_jsonl(tmp_path / "c.jsonl", [row]))
    assert r.format == "chat" and r.problems.total == 0
    assert r.records[0].messages[1] == {"role": "user", "content": "What's the capital\nof France?"}
    bad = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {}}]},
            {"role": "assistant", "content": "x"},
        ]
    }
    r = read_dataset(write_jsonl(tmp_path / "c2.jsonl", [bad]))
    assert "messages[0].content[0]: only text parts are supported" in _msgs(r)[0]


def test_completion_and_text(tmp_path):
    r = read_dataset(
        write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Pip is", "completion": " a robot."}])
    )
    assert r.format == "completion" and r.records[0].messages[1]["content"] == " a robot."
    r = read_dataset(write_jsonl(tmp_path / "t.jsonl", [{"text": "Pip is a robot."}]))
    assert r.format == "text" and r.records[0].text == "Pip is a robot."


def test_unknown_role_names_line_column_and_field(tmp_path):
    rows = [
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}
    ] * 11
    rows.append(
        {
            "conversations": [
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "a"},
                {"from": "bot", "value": "b"},
            ]
        }
    )
    p = write_jsonl(tmp_path / "train.jsonl", rows)
    line = json.dumps(rows[-1])
    col = line.index('"bot"') + 1
    assert _msgs(read_dataset(p)) == [
        f"{p}:12:{col}: conversations[2].from: expected one of human, gpt, system, function_call, "
        'observation (or user, assistant, tool); got "bot"'
    ]
    chat = {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}
    r = read_dataset(write_jsonl(tmp_path / "c.jsonl", [chat]))
    assert (
        'messages[0].role: expected one of system, user, assistant, tool; got "robot"'
        in _msgs(r)[0]
    )


def test_missing_and_mistyped_fields(tmp_path):
    rows = [
        {"instruction": "a", "output": "b"},
        {"instruction": "a"},  # output missing
        {"instruction": 5, "output": "b"},
        {"instruction": "a", "output": "b", "history": [["only one"]]},
        {"instruction": "a", "output": ["b"]},
    ]
    p = write_jsonl(tmp_path / "train.jsonl", rows)
    got = _msgs(read_dataset(p))
    assert got[0] == f"{p}:2:1: output: missing (expected a string)"
    assert got[1] == f"{p}:3:17: instruction: expected a string; got number 5"
    assert got[2].startswith(f"{p}:4:") and "history[0]: expected [instruction, response]" in got[2]
    col = json.dumps(rows[4]).index('["b"]') + 1
    assert got[3] == f"{p}:5:{col}: output: expected a string; got a list"
    r = read_dataset(write_jsonl(tmp_path / "x.jsonl", [{"conversations": "hi"}, 7]))
    assert "conversations: expected a list; got string" in _msgs(r)[0]
    assert "expected a JSON object (one record); got number 7" in _msgs(r)[1]


def test_sharegpt_turns_out_of_order(tmp_path):
    h, g = {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}
    rows = [
        {"conversations": [g, h, g]},  # gpt first
        {"conversations": [h, h, g]},  # two human turns in a row
        {"conversations": [h, g, h]},  # ends on a human turn
        {"conversations": [h, {"from": "system", "value": "s"}, g]},  # late system turn
    ]
    got = _msgs(read_dataset(write_jsonl(tmp_path / "train.jsonl", rows)))
    assert (
        'conversations[0].from: the conversation must start with a human turn; got "gpt"' in got[0]
    )
    assert (
        'conversations[1].from: expected a gpt or function_call turn after "human"; got "human" '
        "(turns must alternate)"
    ) in got[1]
    assert (
        "conversations[2].from: the conversation ends with a human turn; the last turn must be gpt"
        in got[2]
    )
    assert "conversations[1].from: a system turn must come first" in got[3]


def test_empty_assistant_turn(tmp_path):
    rows = [
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "  "}]},
        {"instruction": "Hi", "output": ""},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]},
    ]
    for i, row in enumerate(rows):
        got = _msgs(read_dataset(write_jsonl(tmp_path / f"t{i}.jsonl", [row])))
        assert len(got) == 1 and "empty assistant turn" in got[0]


def test_chat_order_is_lenient_but_must_end_on_assistant(tmp_path):
    u, a = {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}
    r = read_dataset(
        write_jsonl(tmp_path / "c.jsonl", [{"messages": [u, u, a]}, {"messages": [u, a, u]}])
    )
    assert r.problems.warnings == 1 and r.problems.errors == 1 and len(r.records) == 1
    assert "two user messages in a row" in _msgs(r)[0]
    assert "messages[2].role: the conversation ends with a user turn" in _msgs(r)[1]


def test_mixed_formats_name_the_lines(tmp_path):
    rows = [{"instruction": "a", "output": "b"}] * 4 + [
        {"text": "t"},
        {"instruction": "c", "output": "d"},
        {"messages": []},
    ]
    p = write_jsonl(tmp_path / "train.jsonl", rows)
    r = read_dataset(p)
    assert r.format == "alpaca" and len(r.records) == 5
    got = _msgs(r)
    assert got == [
        f'{p}:5: record: looks like text (has "text") but 5 of 7 records in this file are alpaca; '
        "one file must hold one format (mixed formats)",
        f'{p}:7: record: looks like chat (has "messages") but 5 of 7 records in this file are alpaca; '
        "one file must hold one format (mixed formats)",
    ]
    r = read_dataset(write_jsonl(tmp_path / "u.jsonl", [{"foo": 1}]))
    assert "no record has a known key" in _msgs(r)[0]


def test_forced_format(tmp_path):
    p = write_jsonl(tmp_path / "train.jsonl", [{"text": "hello", "prompt": "p", "completion": "c"}])
    assert read_dataset(p).format == "completion"
    r = read_dataset(p, fmt="text")
    assert r.format == "text" and r.records[0].text == "hello"
    r = read_dataset(p, fmt="alpaca")
    assert [str(x).split(": ", 1)[1] for x in r.problems.kept] == [
        "instruction: missing (expected a string)",
        "output: missing (expected a string)",
    ]


def test_all_problems_capped_with_a_count(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text("{bad\n" * 120 + json.dumps({"text": "ok"}) + "\n")
    r = read_dataset(p, max_problems=10)
    assert len(r.problems.kept) == 10 and r.problems.errors == 120 and r.problems.more == 110
    assert r.problems.lines()[-1] == "... and 110 more problems (120 errors and 0 warnings in all)"
    assert len(r.records) == 1


def test_garbage_never_raises(tmp_path):
    blobs = [
        b"\x00\x01\x02",
        b"[[[[",
        b"{" * 5000,
        b'null\ntrue\n"s"\n',
        b'[{"conversations": [null, 3, {"from": 1}]}]',
        b'{"messages": [{"role": "user"}]}',
        b'{"text": "\\ud800"}',
    ]
    for i, blob in enumerate(blobs):
        p = tmp_path / f"g{i}.jsonl"
        p.write_bytes(blob)
        r = read_dataset(p)
        assert r.problems.errors > 0 and not r.records, blob
    assert "text: holds \\ud800, half of a surrogate pair" in _msgs(r)[0]
