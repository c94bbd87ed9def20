"""Terminal view of a run: a one-line progress bar with ETA and tokens/s, and log lines."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from engine.events import Event, LogEvent, MetricEvent, ProgressEvent, StateEvent


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class TerminalProgress:
    """An EventSink that draws progress on a terminal (or plain lines when not a TTY)."""

    def __init__(self, stream: TextIO | None = None, width: int = 28):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self.last: dict[str, float] = {}
        self._last_plain = 0.0
        self._said = ""  # the last message shown: a LogEvent and a StateEvent may repeat it

    def __call__(self, event: Event) -> None:
        if isinstance(event, MetricEvent) and event.worker is None:
            self.last.update(event.values)
            if event.kind == "val" and "val_loss" in event.values:
                self._line(f"step {event.step}: val_loss {event.values['val_loss']:.4f}")
        elif isinstance(event, ProgressEvent):
            self._progress(event)
        elif isinstance(event, LogEvent):
            if event.message != self._said:
                self._said = event.message
                self._line(f"[{event.level}] {event.message}")
        elif isinstance(event, StateEvent):
            if event.message and event.message == self._said:
                return
            self._said = event.message
            text = f"{event.state}: {event.message}" if event.message else event.state
            self._line(text)

    def _progress(self, p: ProgressEvent) -> None:
        frac = min(1.0, p.step / max(1, p.total_steps))
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        loss = self.last.get("train_loss")
        tps = self.last.get("tokens_per_s")
        parts = [f"[{bar}] {p.step}/{p.total_steps}", f"ETA {_fmt_duration(p.eta_s)}"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if tps is not None:
            parts.append(f"{tps:,.0f} tok/s")
        text = "  ".join(parts)
        if self.tty:
            self.stream.write("\r" + text.ljust(100))
            if p.step >= p.total_steps:
                self.stream.write("\n")
            self.stream.flush()
        elif time.monotonic() - self._last_plain > 2.0 or p.step >= p.total_steps:
            self._last_plain = time.monotonic()
            self._line(text)

    def _line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 100 + "\r")
        self.stream.write(text + "\n")
        self.stream.flush()
