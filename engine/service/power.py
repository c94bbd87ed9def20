"""Keep the Mac awake while a run trains (a power assertion); skipped elsewhere.

On macOS ``caffeinate -i -w <pid>`` holds an idle-sleep assertion until it is ended or the
engine process exits (so a killed engine never leaves the Mac unable to sleep).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

log = logging.getLogger(__name__)


class AwakeAssertion:
    """Held from construction until ``release()``; a no-op where the platform has none."""

    def __init__(self, pid: int | None = None, platform: str = sys.platform):
        self._proc: subprocess.Popen | None = None
        pid = pid or os.getpid()
        tool = shutil.which("caffeinate") if platform == "darwin" else None
        if tool is None:
            log.info("keep-awake skipped: no power assertion on %s", platform)
            return
        try:
            self._proc = subprocess.Popen(
                [tool, "-i", "-w", str(pid)], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            log.info(
                "keeping the Mac awake while the run trains (caffeinate pid %d)", self._proc.pid
            )
        except OSError as e:
            log.warning("could not keep the Mac awake: %s", e)

    @property
    def held(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def release(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None
