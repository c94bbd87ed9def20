"""Render a record as text segments, each marked trained or not, ready to tokenize.

With a chat template (mlx-lm ``TokenizerWrapper`` or a Hugging Face tokenizer) the segments
come from rendering growing prefixes of the conversation, so the prompt/answer boundaries are
the template's own. Without one (the bundled demo model) the documented fallback is::

    <s>### System: {system}
    ### Instruction: {user}
    ### Response: {assistant}</s>### Instruction: {user 2}
    ### Response: {assistant 2}</s>

``<s>``/``</s>`` are the tokenizer's BOS/EOS ids (not text); tool results render as
``### Tool: {content}``. Each segment is tokenized on its own, so masks are exact by construction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.data.records import Record

FALLBACK_HEADERS = {"system": "### System:", "user": "### Instruction:", "tool": "### Tool:"}
RESPONSE_HEADER = "### Response:"


@dataclass(frozen=True)
class Segment:
    """A piece of the rendered record. ``token_id`` set means one special token, not text."""

    text: str
    trained: bool
    token_id: int | None = None


class TemplateError(ValueError):
    """A chat template refused or mangled a conversation (reported as a problem on the record)."""


def has_chat_template(tokenizer: Any) -> bool:
    flag = getattr(tokenizer, "has_chat_template", None)
    if isinstance(flag, bool):
        return flag
    return getattr(tokenizer, "chat_template", None) is not None


def eos_ids(tokenizer: Any) -> set[int]:
    ids = set(getattr(tokenizer, "eos_token_ids", None) or ())
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _special(tokenizer: Any, which: str) -> Segment | None:
    tid = getattr(tokenizer, f"{which}_token_id", None)
    if tid is None:
        return None
    text = getattr(tokenizer, f"{which}_token", None) or f"<{which}>"
    return Segment(str(text), which == "eos", int(tid))


def _message_text(m: dict[str, Any]) -> str:
    text = m["content"]
    if m.get("tool_calls"):
        text = (text + "\n" if text else "") + json.dumps(m["tool_calls"], ensure_ascii=False)
    return text


def fallback_segments(
    record: Record, tokenizer: Any, add_generation_prompt: bool = False
) -> list[Segment]:
    """The documented fallback template (see the module docstring)."""
    bos, eos = _special(tokenizer, "bos"), _special(tokenizer, "eos")
    segs: list[Segment] = [bos] if bos else []
    if record.is_text:
        return segs + [Segment(record.text or "", True)] + ([eos] if eos else [])
    prompt = ""
    messages = list(record.messages)
    if record.tools:
        tools = json.dumps(record.tools, ensure_ascii=False)
        prompt += f"### Tools: {tools}\n"
    for m in messages:
        if m["role"] != "assistant":
            prompt += f"{FALLBACK_HEADERS[m['role']]} {m['content']}\n"
            continue
        segs.append(Segment(prompt + RESPONSE_HEADER, False))
        prompt = ""
        answer = _message_text(m)
        segs.append(Segment(answer if answer[:1].isspace() else " " + answer, True))
        if eos:
            segs.append(eos)
    if add_generation_prompt:
        segs.append(Segment(prompt + RESPONSE_HEADER, False))
    elif prompt:
        segs.append(Segment(prompt.rstrip("\n"), False))
    return segs


def _render(tokenizer: Any, messages: list[dict[str, Any]], tools: list | None, gen: bool) -> str:
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": gen}
    if tools:
        kwargs["tools"] = tools
    try:
        out = tokenizer.apply_chat_template(messages, **kwargs)
    except Exception as e:  # jinja raises its own errors ("roles must alternate", ...)
        raise TemplateError(f"the chat template refused this conversation: {e}") from None
    if not isinstance(out, str):
        raise TemplateError("the chat template did not return text")
    return out


def chat_template_segments(record: Record, tokenizer: Any) -> tuple[list[Segment], bool]:
    """Segments from the tokenizer's chat template; the flag is False when the template is not
    prefix-stable and only the last assistant turn could be marked as trained."""
    msgs, tools = record.messages, record.tools
    full = _render(tokenizer, msgs, tools, gen=False)
    spans: list[tuple[int, int]] = []
    stable = True
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        start = _render(tokenizer, msgs[:i], tools, gen=True)
        end = _render(tokenizer, msgs[: i + 1], tools, gen=False)
        if not (full.startswith(start) and full.startswith(end) and len(end) > len(start)):
            stable = False
            break
        spans.append((len(start), len(end)))
    if not stable:
        start = _render(tokenizer, msgs[:-1], tools, gen=True)
        if not full.startswith(start):
            raise TemplateError(
                "the chat template renders this conversation's prompt inconsistently"
            )
        spans = [(len(start), len(full))]
    eos = _special(tokenizer, "eos")
    eos_texts = [t for t in (tokenizer.convert_ids_to_tokens(list(eos_ids(tokenizer))) or []) if t]
    segs: list[Segment] = []
    pos = 0
    for a, b in spans:
        if a > pos:
            segs.append(Segment(full[pos:a], False))
        segs.append(Segment(full[a:b], True))
        if eos and not any(t in full[a:b] for t in eos_texts):
            segs.append(
                eos
            )  # the template closes turns without EOS: add it so the model learns to stop
        pos = b
    if pos < len(full):
        segs.append(Segment(full[pos:], False))
    return segs, stable


def render_record(record: Record, tokenizer: Any) -> tuple[list[Segment], bool, bool]:
    """(segments, joint, stable): ``joint`` says to tokenize text runs as one string (chat
    templates), else segment by segment (fallback). Text records never use a chat template."""
    if record.is_text or not has_chat_template(tokenizer):
        return fallback_segments(record, tokenizer), False, True
    segs, stable = chat_template_segments(record, tokenizer)
    return segs, True, stable
