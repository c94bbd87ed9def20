"""A worker's start-up work, which its probe's benchmark waits out.

A local worker imports the training stack in a background thread as it starts
(engine/worker/agent.py), so that SetupJob begins at once. A Probe's matmul benchmark that
ran meanwhile measured the machine with that import on its cores. On the project's 2-core
VM, two local workers probed at once just after they started read 26-44 GFLOP/s each, and
61-112 four seconds later; the app's one-worker probe read 51-61 against 144-157. The plan
before Start and the run's first plan then priced the machine at under half its speed. So
the benchmark first waits (bounded) until the start-up work registered here is done.

(A network agent imports in its spare job process, engine/worker/spare.py, which does not
register here: on Apple silicon the benchmark runs on the GPU, the import on a CPU core.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_lock = threading.Lock()
_waits: list[Callable[[float], bool]] = []


def add(wait: Callable[[float], bool]) -> None:
    """Register start-up work: ``wait(timeout_s)`` returns True once it is done."""
    with _lock:
        _waits.append(wait)


def settle(timeout_s: float) -> bool:
    """Wait at most ``timeout_s`` for every registered start-up work; True when all is done."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    with _lock:
        waits = list(_waits)
    return all(w(max(0.0, deadline - time.monotonic())) for w in waits)
