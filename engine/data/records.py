"""The one shape every dataset format is normalised to."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Record:
    """A conversation (``messages`` of {"role", "content"}) or, for the text format, ``text``.

    ``messages`` may carry extra keys a chat template understands (``tool_calls``, ``name``);
    ``tools`` is the record's tool list, handed to the chat template.
    """

    file: str
    line: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    text: str | None = None
    tools: list[Any] | None = None

    @property
    def is_text(self) -> bool:
        return self.text is not None

    def key(self) -> str:
        """A digest of the content, for exact-duplicate and train/valid overlap counts."""
        body = self.text if self.is_text else [self.messages, self.tools]
        raw = json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha1(raw).hexdigest()
