"""Render a record as text segments, each marked trained or not, ready to tokenize.

With a chat template (mlx-lm ``TokenizerWrapper`` or a Hugging Face tokenizer) the segments
join to exactly the template's own rendering, nothing added: the tokens are those of
``apply_chat_template(messages)``, as mlx-lm's ChatDataset trains on. Each answer is trained
from where its generation prompt ends (the conversation before it rendered with
``add_generation_prompt``, what the model is given at inference) through the template's
end-of-turn token (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``...), which the model must
learn to emit and which generation stops on (``stop_token_ids``). No EOS is added where the
template has none: Qwen2.5 base models end turns with ``<|im_end|>`` while their EOS is
``<|endoftext|>``, and a turn trained with an extra EOS is one generation never produces.

Without a chat template (the bundled demo model) EOS is the only stop, and the documented
fallback is::

    <s>### System: {system}
    ### Instruction: {user}
    ### Response: {assistant}</s>### Instruction: {user 2}
    ### Response: {assistant 2}</s>

``<s>``/``</s>`` are the tokenizer's BOS/EOS ids (not text); tool results render as
``### Tool: {content}``; a text record is ``<s>{text}</s>``. Each segment is tokenized on its
own, so masks are exact by construction.
"""

from __future__ import annotations

import json
import weakref
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


PROBE = "Orchard0turn0probe"  # an answer no template trims, splits or escapes


@dataclass(frozen=True)
class TurnEnd:
    """The special token a chat template closes an assistant turn with (``<|im_end|>``,
    ``<|eot_id|>``, ``<end_of_turn>``, ``</s>``...): the answer's last trained token, and
    where generation stops."""

    text: str
    token_id: int


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", None) or ())
    added = getattr(tokenizer, "added_tokens_decoder", None)  # Hugging Face: every added token
    if isinstance(added, dict):
        ids |= {int(i) for i in added}
    return ids


def _probe_turn_end(tokenizer: Any) -> TurnEnd | None:
    probes = (
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": PROBE}],
        [
            {"role": "system", "content": "Hi"},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": PROBE},
        ],
    )
    for messages in probes:
        try:
            text = _render(tokenizer, messages, None, gen=False)
        except TemplateError:
            continue
        at = text.rfind(PROBE)
        if at < 0:
            continue
        special = _special_ids(tokenizer)
        for tid in tokenizer.encode(text[at + len(PROBE) :], add_special_tokens=False):
            if int(tid) in special:
                token = tokenizer.convert_ids_to_tokens(int(tid))
                return TurnEnd(str(token), int(tid)) if token else None
        return None
    return None


# tokenizer -> (its chat template, its TurnEnd): probed once per template, not per record
_TURN_ENDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def turn_end(tokenizer: Any) -> TurnEnd | None:
    """The token that closes an assistant turn in the tokenizer's chat template: the first
    special (or added) token the template renders after an answer. None without a chat
    template, or when the template closes answers with plain text only."""
    if not has_chat_template(tokenizer):
        return None
    key = getattr(tokenizer, "chat_template", None)
    try:
        cached = _TURN_ENDS.get(tokenizer)
    except TypeError:  # not weak-referenceable: probe every time
        return _probe_turn_end(tokenizer)
    if cached is not None and cached[0] == key:
        return cached[1]
    found = _probe_turn_end(tokenizer)
    _TURN_ENDS[tokenizer] = (key, found)
    return found


def stop_token_ids(tokenizer: Any) -> set[int]:
    """What generation must stop on to end an answer where training ended it: EOS, and the
    chat template's end-of-turn token (Qwen2.5 base: EOS is <|endoftext|>, turns end with
    <|im_end|>)."""
    end = turn_end(tokenizer)
    return eos_ids(tokenizer) | ({end.token_id} if end else set())


def stop_at_turn_end(tokenizer: Any) -> None:
    """Make mlx-lm's ``generate`` (which stops on ``tokenizer.eos_token_ids``) stop where
    training ended answers: adds the template's end-of-turn token to a TokenizerWrapper."""
    end = turn_end(tokenizer)
    if end is not None and hasattr(tokenizer, "add_eos_token"):
        tokenizer.add_eos_token(str(end.token_id))


def _common_prefix_len(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _turn_spans(
    tokenizer: Any, msgs: list[dict[str, Any]], tools: list | None, full: str, end: TurnEnd | None
) -> list[tuple[int, int]] | None:
    """(start, stop) in ``full`` of each assistant turn's trained text, or None when a
    generation prompt is not a prefix of the full rendering.

    An answer starts where its generation prompt (the conversation before it, rendered with
    ``add_generation_prompt``) ends: exactly what the model is given at inference. It stops
    right after the template's end-of-turn token, the last token the model emits; what the
    template puts after that token (a newline, a later EOS) is context, not a target. A
    template that closes turns with plain text trains up to where the next message begins."""
    turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    starts = []
    for i in turns:
        prompt = _render(tokenizer, msgs[:i], tools, gen=True)
        if not full.startswith(prompt) or (starts and len(prompt) <= starts[-1]):
            return None
        starts.append(len(prompt))
    spans = []
    for k, (i, a) in enumerate(zip(turns, starts, strict=True)):
        limit = starts[k + 1] if k + 1 < len(starts) else len(full)
        at = full.find(end.text, a, limit) if end else -1
        if at >= 0:
            b = at + len(end.text)
        else:
            b = min(
                _common_prefix_len(_render(tokenizer, msgs[: i + 1], tools, gen=False), full), limit
            )
        if b <= a:
            return None
        spans.append((a, b))
    return spans


def chat_template_segments(
    record: Record, tokenizer: Any, end: TurnEnd | None = None
) -> tuple[list[Segment], bool]:
    """Segments from the tokenizer's chat template, whose text joins to exactly the
    template's own rendering (nothing added); the flag is False when the template is not
    prefix-stable and only the last assistant turn could be marked as trained."""
    msgs, tools = record.messages, record.tools
    full = _render(tokenizer, msgs, tools, gen=False)
    spans = _turn_spans(tokenizer, msgs, tools, full, end)
    stable = spans is not None
    if spans is None:
        start = _render(tokenizer, msgs[:-1], tools, gen=True)
        if not full.startswith(start):
            raise TemplateError(
                "the chat template renders this conversation's prompt inconsistently"
            )
        at = full.find(end.text, len(start)) if end else -1
        spans = [(len(start), at + len(end.text) if at >= 0 else len(full))]
    segs: list[Segment] = []
    pos = 0
    for a, b in spans:
        if a > pos:
            segs.append(Segment(full[pos:a], False))
        segs.append(Segment(full[a:b], True))
        pos = b
    if pos < len(full):
        segs.append(Segment(full[pos:], False))
    return segs, stable


def render_record(record: Record, tokenizer: Any) -> tuple[list[Segment], bool, bool]:
    """(segments, joint, stable): ``joint`` says to tokenize text runs as one string (chat
    templates), else segment by segment (fallback). Text records never use a chat template:
    they keep BOS and EOS, EOS being their only stop."""
    if record.is_text or not has_chat_template(tokenizer):
        return fallback_segments(record, tokenizer), False, True
    segs, stable = chat_template_segments(record, tokenizer, turn_end(tokenizer))
    return segs, True, stable
