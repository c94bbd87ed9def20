"""Text generation in a separate process (``python -m app.generate_process``).

A child process keeps MLX off the GUI thread entirely and lets the user cancel by killing
it. QProcess is asynchronous: output arrives through signals, nothing here waits. The child
runs in the Orchard folder (so ``-m app...`` imports), not in the app's current folder: every
path it gets is made absolute here first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, Signal

from engine.config import DEMO_MODEL

ROOT = Path(__file__).resolve().parent.parent


def absolute(path: str) -> str:
    """A path that exists from the app's current folder, made absolute; anything else (the
    'demo' model, a Hugging Face id) unchanged."""
    if not path or path == DEMO_MODEL:
        return path
    local = os.path.expanduser(path)
    return os.path.abspath(local) if os.path.exists(local) else path


def generate_args(model: str, max_tokens: int, adapter: str = "") -> list[str]:
    model, adapter = absolute(model), absolute(adapter)
    args = ["-m", "app.generate_process", "--model", model, "--max-tokens", str(max_tokens)]
    if adapter:
        args += ["--adapter", adapter]
    return args


class GenerationProcess(QObject):
    """One generation; emits ``finished(text)`` or ``failed(message)`` exactly once."""

    finished = Signal(str)
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.SeparateChannels)
        self.process.finished.connect(self._done)
        self.process.errorOccurred.connect(self._error)
        self._reported = False

    def start(self, model: str, prompt: str, max_tokens: int, adapter: str = "") -> None:
        self._reported = False
        self.process.setWorkingDirectory(str(ROOT))  # so ``-m app...`` finds the package
        self.process.start(sys.executable, generate_args(model, max_tokens, adapter))
        self.process.write(prompt.encode("utf-8"))
        self.process.closeWriteChannel()

    def running(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def cancel(self) -> None:
        if self.running():
            self.process.kill()

    def _done(self, code: int, status: QProcess.ExitStatus) -> None:
        out = bytes(self.process.readAllStandardOutput().data()).decode("utf-8", "replace").strip()
        err = bytes(self.process.readAllStandardError().data()).decode("utf-8", "replace").strip()
        if code == 0 and status == QProcess.ExitStatus.NormalExit:
            self._report(self.finished, out)
        else:
            last = [line for line in err.splitlines() if line.strip()]
            self._report(self.failed, last[-1] if last else f"generation exited with code {code}")

    def _error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._report(self.failed, f"could not start {sys.executable} -m app.generate_process")

    def _report(self, signal: Signal, text: str) -> None:
        if not self._reported:
            self._reported = True
            signal.emit(text)
