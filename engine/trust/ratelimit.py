"""Wrong-code rate limiting: exponential backoff, then a lockout and a fresh code.

Each online SPAKE2 attempt is one guess at the code; doubling the wait after every failure
and replacing the code after ``max_failures`` means an attacker never gets a useful number
of guesses against any one code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimited(Exception):
    """Pairing is refused for ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: float, locked: bool):
        self.retry_after_s = retry_after_s
        self.locked = locked
        what = "locked after too many wrong codes" if locked else "too many wrong codes"
        super().__init__(f"pairing {what}; try again in {retry_after_s:.0f} s")


class WrongCodeLimiter:
    def __init__(
        self,
        max_failures: int = 5,
        base_delay_s: float = 1.0,
        lockout_s: float = 300.0,
        on_lockout: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_failures < 1 or base_delay_s < 0 or lockout_s < 0:
            raise ValueError("WrongCodeLimiter: max_failures >= 1, delays >= 0 expected")
        self.max_failures = max_failures
        self.base_delay_s = base_delay_s
        self.lockout_s = lockout_s
        self.on_lockout = on_lockout
        self.clock = clock
        self.failures = 0
        self._not_before = 0.0
        self._locked = False
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise RateLimited when an attempt is not allowed now."""
        with self._lock:
            wait = self._not_before - self.clock()
            if wait > 0:
                raise RateLimited(wait, self._locked)
            if self._locked:  # lockout over: start afresh with the new code
                self._locked = False
                self.failures = 0

    def failure(self) -> None:
        """Count a wrong code; after max_failures lock out and ask for a new code."""
        locked_now = False
        with self._lock:
            self.failures += 1
            now = self.clock()
            if self.failures >= self.max_failures:
                self._locked = locked_now = True
                self._not_before = now + self.lockout_s
            else:
                self._not_before = now + self.base_delay_s * 2 ** (self.failures - 1)
        if locked_now and self.on_lockout is not None:
            self.on_lockout()

    def success(self) -> None:
        with self._lock:
            self.failures = 0
            self._not_before = 0.0
            self._locked = False
