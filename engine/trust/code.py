"""The pairing code a worker shows its user: 8 Crockford base32 characters (40 bits).

SPAKE2 gives an attacker one guess per online attempt and the rate limiter caps attempts,
so 40 bits is far more than enough while still easy to read aloud ("7KQ2-M9XD").
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from engine.trust.files import write_private

log = logging.getLogger(__name__)

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
CODE_LENGTH = 8
CODE_FILE = "pairing_code"
_READ_AS = {"O": "0", "I": "1", "L": "1"}


class CodeError(ValueError):
    """A pairing code typed wrongly (length or characters), named in the message."""


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def display_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def normalize_code(text: str) -> str:
    """Accept what people type: any case, dashes or spaces, O for 0 and I/L for 1."""
    chars = [_READ_AS.get(c, c) for c in text.upper() if c not in "- \t"]
    bad = sorted({c for c in chars if c not in ALPHABET})
    if bad:
        raise CodeError(
            f"pairing code: unexpected character(s) {''.join(bad)!r}; expected {ALPHABET}"
        )
    if len(chars) != CODE_LENGTH:
        raise CodeError(f"pairing code: expected {CODE_LENGTH} characters, got {len(chars)}")
    return "".join(chars)


class CodeStore:
    """The worker's current code, kept in its data folder (0600) so it survives restarts."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / CODE_FILE

    def current(self) -> str:
        if self.path.exists():
            try:
                return normalize_code(self.path.read_text(encoding="utf-8"))
            except (CodeError, UnicodeDecodeError):
                log.warning("%s: not a valid pairing code; making a new one", self.path)
        return self.rotate()

    def rotate(self) -> str:
        code = new_code()
        write_private(self.path, code.encode("ascii"))
        # Never log the code itself: logs are often readable by others (and get pasted in bugs).
        log.warning("a new pairing code was made (shown by the worker; stored in %s)", self.path)
        return code
