"""Errors become readable messages in the window, never a traceback or a freeze."""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from types import TracebackType

from PySide6.QtCore import QObject, Signal

from app.tasks import describe_error

log = logging.getLogger(__name__)


class ErrorReporter(QObject):
    """Routes uncaught exceptions (any thread) to one queued ``message`` signal."""

    message = Signal(str)

    def report(self, exc: BaseException, tb: TracebackType | None) -> None:
        log.error("unexpected error:\n%s", "".join(traceback.format_exception(type(exc), exc, tb)))
        self.message.emit(f"Something went wrong: {describe_error(exc)} (details in the log)")


def install_excepthook(reporter: ErrorReporter) -> None:
    """Show the message in the window and log the traceback, for GUI and worker threads."""

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        reporter.report(exc, tb)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            reporter.report(args.exc_value, args.exc_traceback)

    sys.excepthook = hook
    threading.excepthook = thread_hook
