"""Valid seed datasets, one per format and file kind, written from the formats' public specs.

Alpaca (tatsu-lab/stanford_alpaca), ShareGPT (LLaMA-Factory's data/README), OpenAI chat
(`messages` of role/content, content as text parts), prompt/completion, plain text. The
fuzzer mutates these; every seed must read cleanly (checked in test_dataset_fuzz).
"""

from __future__ import annotations

import json

ALPACA = [
    {"instruction": "Name a fruit.", "input": "", "output": "An apple."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {
        "instruction": "And now double it.",
        "input": "",
        "output": "10",
        "system": "You are terse.",
        "history": [["Add 2 and 3.", "5"]],
    },
]
SHAREGPT = [
    {
        "conversations": [
            {"from": "human", "value": "Hi, who are you?"},
            {"from": "gpt", "value": "A small robot called Pip."},
        ]
    },
    {
        "system": "You can call tools.",
        "tools": json.dumps([{"name": "clock", "description": "the time"}]),
        "conversations": [
            {"from": "human", "value": "What time is it?"},
            {"from": "function_call", "value": '{"name": "clock", "arguments": {}}'},
            {"from": "observation", "value": "12:00"},
            {"from": "gpt", "value": "It is noon."},
        ],
    },
]
CHAT = [
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": "Hello."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Count to three."}]},
            {"role": "assistant", "content": "One, two, three."},
        ]
    },
]
COMPLETION = [
    {"prompt": "The sky is", "completion": " blue."},
    {"prompt": "Two plus two is", "completion": " four."},
]
TEXT_ROWS = [{"text": "Once upon a time a robot planted a tree."}, {"text": "It grew apples."}]
TEXT_TXT = "Once upon a time a robot\nplanted a tree.\n\nThe tree grew apples.\n\nThe end.\n"

ROWS = {
    "alpaca": ALPACA,
    "sharegpt": SHAREGPT,
    "chat": CHAT,
    "completion": COMPLETION,
    "text": TEXT_ROWS,
}


def seed_files() -> dict[str, bytes]:
    """File name -> contents: every format as JSON lines and as a JSON array, plus .txt."""
    out: dict[str, bytes] = {}
    for fmt, rows in ROWS.items():
        out[f"{fmt}.jsonl"] = "".join(json.dumps(r) + "\n" for r in rows).encode()
        out[f"{fmt}.json"] = json.dumps(rows, indent=2).encode()
    out["text.txt"] = TEXT_TXT.encode()
    return out
