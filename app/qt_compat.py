"""Guard against a PySide6 6.12.0 bug on CPython 3.11: ``Signal.emit()`` returns True and
every void Qt method returns None without taking the reference it hands back. Each call drops
one reference the interpreter never had, so after enough emits and paints (pyqtgraph draws
thousands of lines a frame) the count reaches zero and the process aborts with
"none_dealloc" / "bool_dealloc". CPython 3.12 made these singletons immortal, which hides the
bug there; here we do the same by hand, once, and only when a probe shows the leak.
"""

from __future__ import annotations

import ctypes
import logging
import sys

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)
HEADROOM = 1 << 48  # references added: more calls than any process will make
PROBE_CALLS = 16


class _Probe(QObject):
    ping = Signal()


def leaked_singletons() -> list[object]:
    """Which of True/None lose a reference per call in this PySide6 (empty when fixed)."""
    probe = _Probe()
    leaks: list[object] = []
    before = sys.getrefcount(True)
    for _ in range(PROBE_CALLS):
        probe.ping.emit()
    if sys.getrefcount(True) < before - PROBE_CALLS // 2:
        leaks.append(True)
    before = sys.getrefcount(None)
    for _ in range(PROBE_CALLS):
        probe.setObjectName("probe")  # a void method
    if sys.getrefcount(None) < before - PROBE_CALLS // 2:
        leaks.append(None)
    return leaks


def guard_singleton_refcounts() -> bool:
    """Make True, False and None effectively immortal when this PySide6 leaks them."""
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    leaks = leaked_singletons()
    if not leaks:
        return False
    for value in (True, False, None):
        ctypes.c_ssize_t.from_address(id(value)).value += HEADROOM  # ob_refcnt is the first field
    log.info("PySide6 leaks references to %s: applied the refcount guard", leaks)
    return True
