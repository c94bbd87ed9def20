"""A desktop notification when a background run ends: macOS only, a log line elsewhere."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys

log = logging.getLogger(__name__)


def _quote(text: str) -> str:
    """An AppleScript string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def notify(title: str, message: str, platform: str = sys.platform) -> bool:
    """Show ``message`` in Notification Center; False (and a log line) where it cannot."""
    tool = shutil.which("osascript") if platform == "darwin" else None
    if tool is None:
        log.info("notification skipped on %s: %s: %s", platform, title, message)
        return False
    script = f"display notification {_quote(message)} with title {_quote(title)}"
    try:
        subprocess.run([tool, "-e", script], capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("could not show a notification: %s", e)
        return False
    return True
