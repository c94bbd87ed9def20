"""Per-call tokens from a pairing secret: HMAC over the client, the method and the time.

TLS (pinned) already protects the bytes; the token proves the caller holds the secret from
a pairing. Binding the method and a timestamp keeps a leaked token from being reused for
another call or much later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

MAX_SKEW_S = 300.0


def call_token(secret: bytes, client_id: str, method: str, timestamp: int) -> str:
    msg = f"orchard-call-v1\n{client_id}\n{method}\n{timestamp}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def check_call_token(
    secret: bytes, client_id: str, method: str, timestamp: str, token: str, now: float | None = None
) -> str | None:
    """None when the token is good, else the reason it is refused."""
    try:
        ts = int(timestamp)
    except ValueError:
        return "timestamp is not an integer"
    now = time.time() if now is None else now
    if abs(now - ts) > MAX_SKEW_S:
        return (
            f"timestamp is {now - ts:+.0f} s off (clocks differ by more than {MAX_SKEW_S:.0f} s?)"
        )
    if not hmac.compare_digest(token, call_token(secret, client_id, method, ts)):
        return "token does not match"
    return None
