"""Client of peft_logits.py serving in the interop venv: torch is imported once per session,
in another process, and every answer comes within a deadline."""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SCRIPT = Path(__file__).with_name("peft_logits.py")
START_TIMEOUT = 180.0  # importing torch + transformers + peft on a busy machine
CALL_TIMEOUT = 180.0


class TorchSideError(RuntimeError):
    """The torch side failed or did not answer in time; the message carries its stderr."""


class TorchSide:
    """transformers + peft in the interop venv, driven through .npy files in ``workdir``."""

    def __init__(self, python: Path, workdir: Path) -> None:
        self.workdir = workdir
        self.stderr_path = workdir / "torch-side.stderr"
        self._calls = 0
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        # Everything is local: never reach for the Hugging Face hub.
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        with open(self.stderr_path, "w", encoding="utf-8") as stderr:
            self.proc = subprocess.Popen(
                [str(python), "-u", str(SCRIPT), "serve"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                text=True, env=env, cwd=workdir,
            )  # fmt: skip
        self._replies: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        hello = self._reply(START_TIMEOUT, "start")
        log.info("torch side ready: torch %s", hello.get("torch"))

    def logits(
        self, base: Path, tokens: list[list[int]], peft_dir: Path | None = None, cls: str = ""
    ) -> np.ndarray:
        """Logits of transformers' ``cls`` from ``base`` (+ the PEFT adapter) on ``tokens``."""
        self._calls += 1
        inputs = self.workdir / f"tokens-{self._calls}.npy"
        out = self.workdir / f"logits-{self._calls}.npy"
        np.save(inputs, np.asarray(tokens, dtype=np.int64))
        self.call(
            cmd="logits", base=str(base), tokens=str(inputs), out=str(out),
            peft_dir=str(peft_dir) if peft_dir else None, cls=cls,
        )  # fmt: skip
        return np.load(out)

    def tiny_model(self, out: Path, config: dict[str, Any], cls: str = "Qwen2") -> Path:
        """A random ``cls`` model made and saved by transformers (seed 0)."""
        self.call(cmd="tiny-model", out=str(out), config=config, cls=cls, seed=0)
        return out

    def call(self, **request: Any) -> dict[str, Any]:
        if self.proc.poll() is not None:
            raise TorchSideError(f"torch side exited ({self.proc.returncode}): {self._stderr()}")
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = self._reply(CALL_TIMEOUT, request["cmd"])
        if "error" in reply:
            raise TorchSideError(f"torch side, {request['cmd']}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()  # end of input: the server returns
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._replies.put(line)
        self._replies.put(None)

    def _reply(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            raise TorchSideError(f"torch side, {what}: no answer in {timeout:.0f} s") from None
        if line is None:
            self.proc.wait(timeout=30)
            raise TorchSideError(
                f"torch side, {what}: exited ({self.proc.returncode}): {self._stderr()}"
            )
        return json.loads(line)

    def _stderr(self) -> str:
        text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.strip().splitlines()[-20:])
