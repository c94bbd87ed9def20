"""Background work with results delivered as Qt signals.

Anything that touches disk, MLX or the network goes through ``run_task`` so the GUI thread
only ever waits for a queued signal. Results and errors come back on the GUI thread.
"""

from __future__ import annotations

import atexit
import logging
import traceback
from collections.abc import Callable
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

log = logging.getLogger(__name__)

_live: set[Task] = set()  # keep signal objects alive until their task reports
_exiting = False  # the interpreter is exiting: a result has nobody left to go to


@atexit.register
def _at_exit() -> None:
    """Runs before PySide's own exit cleanup deletes the Task objects: a task still running
    then (a process that exits mid-probe, as a test process does) reports nothing."""
    global _exiting
    _exiting = True


class Task(QObject):
    """Signals of one background call: ``done(result)`` or ``failed(message)``."""

    done = Signal(object)
    failed = Signal(str)
    finished = Signal()


class _Runnable(QRunnable):
    def __init__(self, task: Task, fn: Callable[..., Any], args: tuple, kwargs: dict):
        super().__init__()
        self.task, self.fn, self.args, self.kwargs = task, fn, args, kwargs

    def run(self) -> None:
        try:
            result = self.fn(*self.args, **self.kwargs)
        except Exception as e:  # noqa: BLE001 - every failure becomes a readable message
            log.debug("background task failed:\n%s", traceback.format_exc())
            self._report("failed", describe_error(e))
        else:
            self._report("done", result)
        self._report("finished")

    def _report(self, name: str, *args: Any) -> None:
        if _exiting:
            return
        try:
            getattr(self.task, name).emit(*args)
        except RuntimeError:  # "Signal source has been deleted": the process is exiting
            if shiboken6.isValid(self.task):
                raise


def describe_error(e: BaseException) -> str:
    """One readable line for a user: the message, not the traceback."""
    problems = getattr(e, "problems", None)
    if problems:
        return "\n".join(str(p) for p in problems[:20])
    text = str(e).strip()
    return text or type(e).__name__


def _guarded(owner: QObject | None, callback: Callable[[Any], None]) -> Callable[[Any], None]:
    """Skip the callback when its widget was destroyed while the task ran (window closed)."""

    def call(value: Any) -> None:
        if owner is None or shiboken6.isValid(owner):
            callback(value)

    return call


def run_task(
    fn: Callable[..., Any],
    *args: Any,
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[str], None] | None = None,
    owner: QObject | None = None,
    pool: QThreadPool | None = None,
    **kwargs: Any,
) -> Task:
    """Run ``fn(*args, **kwargs)`` on a pool thread; callbacks run on the GUI thread,
    and only while ``owner`` (the widget that asked) still exists."""
    task = Task()
    if on_done is not None:
        task.done.connect(_guarded(owner, on_done))
    if on_error is not None:
        task.failed.connect(_guarded(owner, on_error))
    _live.add(task)
    task.finished.connect(lambda: _live.discard(task))
    (pool or QThreadPool.globalInstance()).start(_Runnable(task, fn, args, kwargs))
    return task
