"""Order and emptiness rules for a conversation's turns (ShareGPT strict, OpenAI chat lenient).

ShareGPT follows LLaMA-Factory: an optional system turn first, then human/observation and
gpt/function_call turns alternating, ending on a gpt/function_call turn (the trained answer).
OpenAI chat only requires system first, an assistant message last, and warns on repeats.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

_NAMES = {
    "sharegpt": {"user": "human", "assistant": "gpt", "tool": "observation", "system": "system"}
}


class _Reporter(Protocol):
    def error(self, path: tuple[str | int, ...], message: str) -> None: ...
    def warning(self, path: tuple[str | int, ...], message: str) -> None: ...


def check_turns(
    messages: list[dict[str, Any]], c: _Reporter, key: str, sources: list[str], style: str
) -> None:
    """Report order problems. ``sources`` are the roles as written (e.g. "human"), for messages."""
    role_field, text_field = ("from", "value") if style == "sharegpt" else ("role", "content")
    names = _NAMES.get(style, {})

    def name(role: str) -> str:
        return names.get(role, role)

    body = [(i, m) for i, m in enumerate(messages) if m["role"] != "system"]
    for i, m in enumerate(messages):
        if m["role"] == "system" and i > 0:
            c.error((key, i, role_field), "a system turn must come first")
        if m["role"] == "assistant" and not m["content"].strip() and not m.get("tool_calls"):
            c.error((key, i, text_field), "empty assistant turn (nothing to train on)")
        elif m["role"] == "user" and not m["content"].strip():
            c.warning((key, i, text_field), f"empty {name('user')} turn")
    if not body:
        c.error((key,), f"no {name('user')} or {name('assistant')} turns")
        return
    if style == "sharegpt":
        for k, (i, m) in enumerate(body):
            want_answer = k % 2 == 1
            is_answer = m["role"] == "assistant"
            if k == 0 and is_answer:
                c.error(
                    (key, i, role_field),
                    f"the conversation must start with a human turn; got {json.dumps(sources[i])}",
                )
                return
            if want_answer != is_answer:
                want = "a gpt or function_call" if want_answer else "a human or observation"
                c.error(
                    (key, i, role_field),
                    f"expected {want} turn after {json.dumps(sources[body[k - 1][0]])}; got {json.dumps(sources[i])} "
                    "(turns must alternate)",
                )
                return
    else:
        for (_, prev), (i, m) in zip(body, body[1:], strict=False):
            if prev["role"] == m["role"] and m["role"] in ("user", "assistant"):
                c.warning(
                    (key, i, role_field),
                    f"two {m['role']} messages in a row; some chat templates reject this",
                )
        if body[0][1]["role"] == "assistant":
            c.warning((key, body[0][0], role_field), "the conversation starts with the assistant")
    last_i, last = body[-1]
    if last["role"] != "assistant":
        c.error(
            (key, last_i, role_field),
            f"the conversation ends with a {name(last['role'])} turn; the last turn must be "
            f"{name('assistant')} (its answer is what trains)",
        )
