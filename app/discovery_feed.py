"""Runs the engine's Bonjour browser for the window; its peer events reach the bridge.

Starting zeroconf binds sockets and may take seconds, so start and stop happen on pool
threads. Manual adds go through the browser too, so every row comes from one source.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal

from app.tasks import run_task
from engine.discovery import Browser
from engine.events import EventSink

log = logging.getLogger(__name__)


class DiscoveryFeed(QObject):
    failed = Signal(str)
    ready = Signal()

    def __init__(self, sink: EventSink, parent: QObject | None = None):
        super().__init__(parent)
        self.sink = sink
        self.browser: Browser | None = None
        self._stopped = False

    def start(self) -> None:
        run_task(
            lambda: Browser(on_event=self.sink).start(),
            on_done=self._started,
            on_error=self._failed,
        )

    def _started(self, browser: Browser) -> None:
        if self._stopped:  # the window closed while zeroconf was starting
            run_task(browser.close)
            return
        self.browser = browser
        self.ready.emit()

    def _failed(self, message: str) -> None:
        log.warning("Bonjour browsing is off: %s", message)
        self.failed.emit(
            f"Could not look for other Macs on the network ({message}). "
            "You can still add workers by address."
        )

    def add_manual(self, host: str, port: int) -> bool:
        """False when browsing is off (the caller then lists the worker itself)."""
        if self.browser is None:
            return False
        self.browser.add_manual(host, port)
        return True

    def remove_manual(self, host: str, port: int) -> bool:
        if self.browser is None:
            return False
        self.browser.remove_manual(host, port)
        return True

    def stop(self) -> None:
        self._stopped = True
        browser, self.browser = self.browser, None
        if browser is not None:
            run_task(browser.close)
