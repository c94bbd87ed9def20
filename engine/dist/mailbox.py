"""Where incoming collective chunks wait until the local collective asks for them.

Keyed by ``(op_id, src, part)``; a part may arrive in pieces (``offset``/``total``) and is
reassembled here. Pure Python so the transport (gRPC servicer) and the algorithms stay apart.
"""

from __future__ import annotations

import hmac
import threading
import time

MAX_PART_BYTES = 1 << 31  # refuse a part that claims to be larger than 2 GiB


class CollectiveError(RuntimeError):
    """A collective could not complete: a peer refused, failed or timed out."""


class _Part:
    __slots__ = ("buf", "dtype", "got", "total")

    def __init__(self, total: int, dtype: str):
        self.buf: bytearray | bytes | memoryview | None = None
        self.total = total
        self.got = 0
        self.dtype = dtype


class Mailbox:
    """Thread-safe store of received parts; ``take`` blocks until a part is complete."""

    def __init__(self, token: str = ""):
        self._token = token.encode()
        self._cond = threading.Condition()
        self._parts: dict[tuple[int, int, int], _Part] = {}
        self._error: BaseException | None = None

    def set_token(self, token: str) -> None:
        """Bind the mailbox to a group (a new run); drops anything left from an older one."""
        with self._cond:
            self._token = token.encode()
            self._parts.clear()
            self._error = None

    def token_ok(self, token: str | bytes) -> bool:
        sent = token.encode() if isinstance(token, str) else bytes(token)
        return bool(self._token) and hmac.compare_digest(sent, self._token)

    def has_token(self) -> bool:
        return bool(self._token)

    def put(
        self,
        op_id: int,
        src: int,
        part: int,
        offset: int,
        total: int,
        data: bytes | memoryview,
        dtype: str,
    ) -> None:
        """Store one piece. Raises ValueError for a piece that does not fit its part."""
        n = len(data)
        if not 0 <= total <= MAX_PART_BYTES:
            raise ValueError(f"part size {total} outside [0, {MAX_PART_BYTES}]")
        if offset < 0 or offset + n > total:
            raise ValueError(f"piece [{offset}, {offset + n}) does not fit a part of {total} bytes")
        key = (op_id, src, part)
        with self._cond:
            entry = self._parts.get(key)
            if entry is None:
                entry = self._parts[key] = _Part(total, dtype)
            elif entry.total != total or entry.dtype != dtype:
                raise ValueError(f"piece of op {op_id} part {part} disagrees on size or dtype")
            if offset == 0 and n == total:
                entry.buf = data  # the common case: one piece, kept without a copy
            else:
                if entry.buf is None:
                    entry.buf = bytearray(total)
                entry.buf[offset : offset + n] = data
            entry.got += n
            if entry.got >= total:
                self._cond.notify_all()

    def take(
        self, op_id: int, src: int, part: int, timeout: float
    ) -> tuple[bytes | bytearray | memoryview, str]:
        """Wait for a complete part and remove it; raises CollectiveError on timeout or failure."""
        key = (op_id, src, part)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._error is not None:
                    raise CollectiveError(f"collective op {op_id} aborted: {self._error}")
                entry = self._parts.get(key)
                if entry is not None and entry.got >= entry.total:
                    del self._parts[key]
                    return (entry.buf if entry.buf is not None else b""), entry.dtype
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CollectiveError(
                        f"collective op {op_id}: part {part} from rank {src} did not arrive "
                        f"within {timeout:.1f}s"
                    )
                self._cond.wait(left)

    def fail(self, error: BaseException, token: bytes | None = None) -> None:
        """Wake every waiter with ``error`` (a send failed: the op can no longer complete).
        ``token``: the failing group's; ignored once the mailbox serves another group (a
        regroup), so a late failure of the old group's stream never fails the new one."""
        with self._cond:
            if token is not None and not hmac.compare_digest(token, self._token):
                return
            self._error = error
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._parts)
