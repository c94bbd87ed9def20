"""Text generation in a separate process (``python -m app.generate_process``).

A child process keeps MLX off the GUI thread entirely and lets the user cancel by killing
it. QProcess is asynchronous: output arrives through signals, nothing here waits.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, Signal

ROOT = Path(__file__).resolve().parent.parent


def generate_args(model: str, max_tokens: int, adapter: str = "") -> list[str]:
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
