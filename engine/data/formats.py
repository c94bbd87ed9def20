"""Each dataset format's fields, checked and normalised to a ``Record``.

Formats follow their public descriptions: Alpaca (Stanford alpaca, with LLaMA-Factory's
``system``/``history``), ShareGPT (LLaMA-Factory's ``conversations`` of from/value), OpenAI
chat (``messages`` of role/content), prompt/completion, and plain text.
"""

from __future__ import annotations

import json
from typing import Any

from engine.data.locate import field_name
from engine.data.problems import ProblemLog
from engine.data.readers import RawItem
from engine.data.records import Record
from engine.data.validate import check_turns

Path = tuple[str | int, ...]

SHAREGPT_ROLES = {
    "human": "user",
    "gpt": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
CHAT_ROLES = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "developer": "system",
    "function": "tool",
}
_PASS_THROUGH = ("tool_calls", "tool_call_id", "name")


def describe(value: Any) -> str:
    """How a wrongly typed JSON value reads in a message: 'number 5', 'null', 'a list'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {json.dumps(value[:40])}"
    return "a list" if isinstance(value, list) else "an object"


class Checker:
    """Collects one record's problems, each placed at its field's line and column."""

    def __init__(self, item: RawItem, problems: ProblemLog):
        self.item = item
        self.problems = problems
        self.failed = False

    def error(self, path: Path, message: str) -> None:
        self.failed = True
        line, col = self.item.where(path)
        self.problems.error(self.item.file, line, message, column=col, field=field_name(path))

    def warning(self, path: Path, message: str) -> None:
        line, col = self.item.where(path)
        self.problems.warning(self.item.file, line, message, column=col, field=field_name(path))

    def string(
        self,
        obj: dict[str, Any],
        key: str,
        path: Path,
        *,
        required: bool = True,
        what: str = "a string",
    ) -> str | None:
        """obj[key] as a string; None (with an error) when it is missing or not a string."""
        if key not in obj or (obj[key] is None and not required):
            if required:
                self.error((*path, key), f"missing (expected {what})")
            return None
        value = obj[key]
        if not isinstance(value, str):
            self.error((*path, key), f"expected {what}; got {describe(value)}")
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate escape such as "\ud800"
            code = f"\\u{ord(value[e.start]):04x}"
            self.error(
                (*path, key), f"holds {code}, half of a surrogate pair: not valid Unicode text"
            )
            return None
        return value

    def list_of(
        self, obj: dict[str, Any], key: str, path: Path, required: bool = True
    ) -> list | None:
        if key not in obj or (obj[key] is None and not required):
            if required:
                self.error((*path, key), "missing (expected a list)")
            return None
        value = obj[key]
        if not isinstance(value, list):
            self.error((*path, key), f"expected a list; got {describe(value)}")
            return None
        if required and not value:
            self.error((*path, key), "expected a non-empty list; got []")
            return None
        return value


def _record(item: RawItem, messages: list[dict[str, Any]], tools: list | None = None) -> Record:
    return Record(file=item.file, line=item.line, messages=messages, tools=tools)


def normalise_alpaca(obj: dict[str, Any], c: Checker) -> Record | None:
    instruction = c.string(obj, "instruction", ())
    inp = c.string(obj, "input", (), required=False) or ""
    output = c.string(obj, "output", ())
    system = c.string(obj, "system", (), required=False)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    history = c.list_of(obj, "history", (), required=False) or []
    for i, pair in enumerate(history):
        ok = isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)
        if not ok:
            c.error(
                ("history", i),
                f"expected [instruction, response], two strings; got {describe(pair)}",
            )
            continue
        if not pair[1].strip():
            c.error(("history", i, 1), "empty assistant turn (the response is empty)")
        messages += [
            {"role": "user", "content": pair[0]},
            {"role": "assistant", "content": pair[1]},
        ]
    if instruction is not None and not instruction.strip() and not inp.strip():
        c.error(("instruction",), "empty prompt (instruction and input are both empty)")
    if output is not None and not output.strip():
        c.error(("output",), "empty assistant turn (the output is empty)")
    if c.failed:
        return None
    prompt = f"{instruction}\n\n{inp}" if inp.strip() else instruction
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return _record(c.item, messages)


def _tools(obj: dict[str, Any], c: Checker) -> list | None:
    tools = obj.get("tools")
    if tools is None:
        return None
    if isinstance(tools, str):  # LLaMA-Factory stores tools as a JSON string
        try:
            tools = json.loads(tools) if tools.strip() else None
        except json.JSONDecodeError as e:
            c.error(("tools",), f"a string that is not valid JSON ({e.msg})")
            return None
        except (RecursionError, ValueError):
            c.error(("tools",), "a JSON string nested too deeply or with a number too long")
            return None
    if tools is not None and not isinstance(tools, list):
        c.error(("tools",), f"expected a list of tool descriptions; got {describe(tools)}")
        return None
    return tools


def normalise_sharegpt(obj: dict[str, Any], c: Checker) -> Record | None:
    turns = c.list_of(obj, "conversations", ())
    system = c.string(obj, "system", (), required=False)
    tools = _tools(obj, c)
    if turns is None:
        return None
    messages: list[dict[str, Any]] = []
    sources: list[str] = []
    for i, turn in enumerate(turns):
        path: Path = ("conversations", i)
        if not isinstance(turn, dict):
            c.error(path, f"expected an object with from and value; got {describe(turn)}")
            continue
        role_key, text_key = (
            ("from", "value") if "from" in turn or "value" in turn else ("role", "content")
        )
        who = c.string(turn, role_key, path)
        text = c.string(turn, text_key, path)
        if who is not None and who not in SHAREGPT_ROLES:
            c.error(
                (*path, role_key),
                "expected one of human, gpt, system, function_call, observation "
                f"(or user, assistant, tool); got {json.dumps(who)}",
            )
            continue
        if who is None or text is None:
            continue
        messages.append({"role": SHAREGPT_ROLES[who], "content": text})
        sources.append(who)
    if c.failed:
        return None
    check_turns(messages, c, "conversations", sources, style="sharegpt")
    if c.failed:
        return None
    if system:
        if messages and messages[0]["role"] == "system":
            c.warning(("system",), "both a top-level system and a system turn; using both")
        messages.insert(0, {"role": "system", "content": system})
    return _record(c.item, messages, tools)


def _chat_content(value: Any, path: Path, c: Checker) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                got = part.get("type") if isinstance(part, dict) else describe(part)
                c.error(
                    (*path, j),
                    f'only text parts are supported ({{"type": "text", "text": ...}}); got {json.dumps(got)}',
                )
                return None
            text = c.string(part, "text", (*path, j))
            if text is None:
                return None
            parts.append(text)
        return "\n".join(parts)
    c.error(path, f"expected a string or a list of text parts; got {describe(value)}")
    return None


def normalise_chat(obj: dict[str, Any], c: Checker) -> Record | None:
    items = c.list_of(obj, "messages", ())
    tools = _tools(obj, c)
    if items is None:
        return None
    messages: list[dict[str, Any]] = []
    for i, msg in enumerate(items):
        path: Path = ("messages", i)
        if not isinstance(msg, dict):
            c.error(path, f"expected an object with role and content; got {describe(msg)}")
            continue
        role = c.string(msg, "role", path)
        if role is not None and role not in CHAT_ROLES:
            c.error(
                (*path, "role"),
                f"expected one of system, user, assistant, tool; got {json.dumps(role)}",
            )
            continue
        if "content" not in msg:
            c.error((*path, "content"), "missing (expected a string or a list of text parts)")
            continue
        if msg["content"] is None and msg.get("tool_calls"):
            content: str | None = ""
        else:
            content = _chat_content(msg["content"], (*path, "content"), c)
        if role is None or content is None:
            continue
        out = {"role": CHAT_ROLES[role], "content": content}
        out.update({k: msg[k] for k in _PASS_THROUGH if k in msg})
        messages.append(out)
    if c.failed:
        return None
    check_turns(messages, c, "messages", [m["role"] for m in messages], style="chat")
    return None if c.failed else _record(c.item, messages, tools)


def normalise_completion(obj: dict[str, Any], c: Checker) -> Record | None:
    prompt = c.string(obj, "prompt", ())
    completion = c.string(obj, "completion", ())
    if completion is not None and not completion.strip():
        c.error(("completion",), "empty completion (nothing to train on)")
    if c.failed:
        return None
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    return _record(c.item, messages)


def normalise_text(obj: dict[str, Any], c: Checker) -> Record | None:
    text = c.string(obj, "text", ())
    if text is not None and not text.strip():
        c.error(("text",), "empty text (nothing to train on)")
    if c.failed or text is None:
        return None
    return Record(file=c.item.file, line=c.item.line, text=text)


NORMALISERS = {
    "alpaca": normalise_alpaca,
    "sharegpt": normalise_sharegpt,
    "chat": normalise_chat,
    "completion": normalise_completion,
    "text": normalise_text,
}


def normalise(item: RawItem, fmt: str, problems: ProblemLog) -> Record | None:
    c = Checker(item, problems)
    if not isinstance(item.value, dict):
        c.error((), f"expected a JSON object (one record); got {describe(item.value)}")
        return None
    return NORMALISERS[fmt](item.value, c)
