"""Processes for the remote-worker tests: `orchard worker` agents and a coordinator, optionally
inside a network namespace, whose stdout lines are read with deadlines (never a hang)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LOG_TAIL_CHARS = 12_000  # of each process's log in a failed test's report
MAX_LOGS = 16  # logs in one report
_logs: list[tuple[str, Path]] = []  # (test id, log) of every LineProcess started
_WORKER_LINE = re.compile(r"^Orchard worker (\S+) on port (\d+) ")
_CODE_LINE = re.compile(r"^Pairing code: ([0-9A-Z]{4}-[0-9A-Z]{4})")


class LineProcess:
    def __init__(
        self, argv: list[str], home: Path, netns: str | None = None, log: Path | None = None
    ):
        prefix = ["ip", "netns", "exec", netns] if netns else []
        env = {**os.environ, "ORCHARD_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        env.pop("ORCHARD_WORKER_TOKEN", None)
        self.log_path = log or home / "stderr.log"
        remember_log(self.log_path)
        home.mkdir(parents=True, exist_ok=True)
        self._err = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, *argv], cwd=ROOT, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._err, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, match: Callable[[str], Any], timeout: float) -> Any:
        """The first truthy ``match(line)`` of a new line within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if found := match(line):
                return found
        tail = self.log_path.read_text(errors="replace")[-1500:] if self.log_path.exists() else ""
        raise AssertionError(
            f"no matching line within {timeout} s; last lines {self.seen[-6:]}; stderr: {tail}"
        )

    def seen_or_wait(self, match: Callable[[str], Any], timeout: float) -> Any:
        """Like wait_for, but a line already read counts too (the last matching one)."""
        for line in reversed(self.seen):
            if found := match(line):
                return found
        return self.wait_for(match, timeout)

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._err.close()


def remember_log(path: Path) -> None:
    """Show ``path`` (a process's log) in the report of the running test if it fails."""
    _logs.append((os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0], path))


def report_logs(item: Any, report: Any) -> None:
    """Put the logs of a failed test's processes into its pytest report, so a failure seen
    once shows what each process did: pytest's temporary folders rotate away. The logs are
    those of its LineProcesses (agents, coordinators) and every ``*.log`` under its
    tmp_path (local workers' logs in run folders). Called from the conftests'
    pytest_runtest_makereport."""
    mine = [path for test, path in _logs if test == report.nodeid]
    if report.when == "teardown":
        _logs[:] = [(test, path) for test, path in _logs if test != report.nodeid]
    if not report.failed:
        return
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if tmp is not None and Path(tmp).is_dir():
        mine += [p for p in sorted(Path(tmp).rglob("*.log")) if p not in mine]
    for path in mine[:MAX_LOGS]:
        text = path.read_text(errors="replace") if path.exists() else "(no log file)"
        cut = (
            f"... ({len(text) - LOG_TAIL_CHARS} characters before)\n"
            if len(text) > LOG_TAIL_CHARS
            else ""
        )
        report.sections.append((f"{report.when}: log {path}", cut + text[-LOG_TAIL_CHARS:]))


@dataclass
class Agent:
    """A running `orchard worker` and what it showed on its terminal."""

    proc: LineProcess
    worker_id: str
    port: int
    code: str


def start_agent(
    home: Path, *, netns: str | None = None, host: str = "0.0.0.0", port: int = 0,
    service_type: str = "", timeout: float = 60, job_lease_s: float | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[LineProcess, Agent]:  # fmt: skip
    argv = ["-m", "engine.worker", "--host", host, "--port", str(port), *extra]
    argv += ["--job-lease-s", str(job_lease_s)] if job_lease_s else []
    argv += ["--service-type", service_type] if service_type else ["--no-advertise"]
    proc = LineProcess(argv, home, netns)
    worker_id, bound = proc.wait_for(lambda s: (m := _WORKER_LINE.match(s)) and m.groups(), timeout)
    code = proc.wait_for(lambda s: (m := _CODE_LINE.match(s)) and m.group(1), timeout)
    return proc, Agent(proc, worker_id, int(bound), code)


def json_line(**want: Any) -> Callable[[str], Any]:
    """Match a JSON line whose top-level keys hold the wanted values (None: key present)."""

    def match(line: str) -> Any:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            return None
        ok = all(k in obj and (v is None or obj[k] == v) for k, v in want.items())
        return obj if ok else None

    return match


def peer_event(change: str, **want: Any) -> Callable[[str], Any]:
    def match(line: str) -> Any:
        obj = json_line(event=change)(line)
        if obj and all(obj["peer"].get(k) == v for k, v in want.items()):
            return obj["peer"]
        return None

    return match
