"""`orchard models` (what the Hugging Face cache holds) and `orchard pull ID` (download it).

`pull` draws a progress bar with the rate and ETA; Ctrl-C cancels and keeps the part of the
file already downloaded, so the next `pull` resumes it.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import TextIO

from engine.cli.progress import _fmt_duration
from engine.model.cache import cached_snapshot
from engine.model.download import DownloadProgress, ensure_model
from engine.model.hub import DownloadCancelled, HubError, inspect_remote
from engine.model.inspect import inspect_model


def models_main(out: TextIO | None = None) -> int:
    from engine.model.cache import format_cache_table, hub_offline, list_cached_models

    stream = out or sys.stdout
    stream.write(format_cache_table(list_cached_models()) + "\n")
    if hub_offline():
        stream.write("offline (HF_HUB_OFFLINE): only the models marked ready can be used\n")
    return 0


class PullProgress:
    """A download progress bar on a terminal (plain lines every 2 s when not a TTY)."""

    def __init__(self, stream: TextIO | None = None, width: int = 28):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self.start_bytes: int | None = None
        self._last_plain = 0.0

    def __call__(self, p: DownloadProgress) -> None:
        if self.start_bytes is None:
            self.start_bytes = p.done_bytes  # what the cache already had is not speed
        elapsed = max(1e-6, time.monotonic() - self.t0)
        rate = (p.done_bytes - self.start_bytes) / elapsed
        eta = (p.total_bytes - p.done_bytes) / rate if rate > 0 else None
        filled = int(p.fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        text = (f"[{bar}] {p.done_bytes / 1e6:,.1f}/{p.total_bytes / 1e6:,.1f} MB  "
                f"{rate / 1e6:.1f} MB/s  ETA {_fmt_duration(eta)}  "
                f"file {min(p.files_done + 1, p.files_total)}/{p.files_total} {p.file}")  # fmt: skip
        if p.resumed_from and p.file_bytes == p.resumed_from:
            text += f" (resumed at {p.resumed_from / 1e6:.1f} MB)"
        if self.tty:
            self.stream.write("\r" + text[:120].ljust(120) + ("\n" if p.finished else ""))
            self.stream.flush()
        elif p.finished or time.monotonic() - self._last_plain > 2.0:
            self._last_plain = time.monotonic()
            self.stream.write(text + "\n")
            self.stream.flush()


def pull_main(repo_id: str, revision: str | None = None, out: TextIO | None = None) -> int:
    """Describe the model, download what the cache lacks, print the folder. 0 when it is
    cached, 1 when the Hub refused or the download failed, 130 when cancelled."""
    stream = out or sys.stdout
    cancel = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: object) -> None:
        cancel.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)
    try:
        folder = cached_snapshot(repo_id, revision)
        if folder is not None:  # nothing to fetch: no network either
            stream.write(inspect_model(folder).format_text() + "\nalready in the cache\n")
        else:
            remote = inspect_remote(repo_id, revision)
            stream.write(remote.format_text() + "\n")
            stream.flush()
            folder = ensure_model(repo_id, revision, PullProgress(), cancel)
    except DownloadCancelled as e:
        sys.stderr.write(f"\norchard: {e}\n")
        return 130
    except HubError as e:
        sys.stderr.write(f"orchard: {e}\n")
        return 1
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
    stream.write(f"ready: {folder}\n")
    return 0
