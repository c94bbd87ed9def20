"""A local worker must never outlive the engine that started it.

Two independent guards: on Linux the kernel sends SIGTERM when the parent dies
(prctl PR_SET_PDEATHSIG); everywhere (macOS too) a watchdog thread exits the process when
the parent pid changes or the stdin pipe from the parent reaches end-of-file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to signal this process when its parent thread exits. False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
            return False
    except OSError as e:
        log.warning("prctl unavailable: %s", e)
        return False
    return True


def _default_exit(reason: str) -> None:
    log.warning("parent is gone (%s); worker exits", reason)
    logging.shutdown()
    os._exit(3)


def start_watchdog(
    parent_pid: int,
    pipe_fd: int | None = None,
    on_parent_gone: Callable[[str], None] = _default_exit,
    interval_s: float = 0.5,
) -> list[threading.Thread]:
    """Watch the parent pid (polling) and, if given, a pipe fd whose EOF means the parent died.

    The parent-pid check covers a parent that is killed before the pipe is read; the pipe
    check reacts at once and also catches a grandparent that keeps the pid alive.
    """
    threads = []

    def poll_parent() -> None:
        while True:
            if os.getppid() != parent_pid:
                on_parent_gone(f"parent pid changed from {parent_pid}")
                return
            time.sleep(interval_s)

    threads.append(threading.Thread(target=poll_parent, name="lifeline-ppid", daemon=True))
    if pipe_fd is not None:

        def read_pipe() -> None:
            # Raw os.read, not sys.stdin: a buffered reader's lock would block interpreter exit.
            try:
                while os.read(pipe_fd, 4096):  # the parent never writes after the token
                    pass
            except OSError:
                pass
            on_parent_gone("stdin pipe from the parent reached end-of-file")

        threads.append(threading.Thread(target=read_pipe, name="lifeline-pipe", daemon=True))
    for t in threads:
        t.start()
    return threads
