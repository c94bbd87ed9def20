"""The real engine process over its real socket: start, attach late, stop, exit by itself."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.events import MetricEvent, StateEvent
from engine.rpc.engine_client import EngineClient, EngineRefused, EngineUnavailable
from engine.service.connection import CONNECTION_FILE, DIR_ENV, SOCKET_FILE, read_connection
from engine.service.info import RunMark
from engine.service.launcher import connect_engine, job_toml_for_engine
from engine.train.metrics import read_metrics
from tests.runtime.helpers import tiny_job
from tests.service.engines import isolated_engine_dir, wait_gone


class Collector:
    """Reads a Watch stream on a thread, as the app does."""

    def __init__(self, client: EngineClient, name: str, history: bool):
        self.stream = client.watch(name, history)
        self.items: list = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for item in self.stream:
                self.items.append(item)
        except EngineUnavailable:
            self.items.append("closed")  # the test closed this client's channel

    def until(self, accept, timeout_s: float = 240.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for item in list(self.items):
                if accept(item):
                    return item
            time.sleep(0.05)
        raise AssertionError(f"not seen within {timeout_s}s; last items: {self.items[-5:]}")

    def marks(self) -> list[str]:
        return [i.change for i in self.items if isinstance(i, RunMark)]

    def metric_rows(self) -> list[dict]:
        return [i.to_json() for i in self.items if isinstance(i, MetricEvent)]


def is_mark(change: str):
    return lambda i: isinstance(i, RunMark) and i.change == change


def train_step_at_least(n: int):
    return lambda i: isinstance(i, MetricEvent) and i.kind == "train" and i.step >= n


@pytest.fixture
def folder(monkeypatch):
    with isolated_engine_dir(monkeypatch) as f:
        yield f


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_run_goes_on_without_clients_and_a_late_one_gets_history_then_live(
    folder: Path, tmp_path: Path
) -> None:
    app = connect_engine(folder, idle_exit_s=2)
    info = read_connection(folder)
    assert info is not None and info.address == f"unix:{folder.resolve() / SOCKET_FILE}"
    assert stat.S_IMODE((folder / CONNECTION_FILE).stat().st_mode) == 0o600
    with pytest.raises(EngineRefused) as refused:
        EngineClient(info.address, "not-the-key").status()
    assert refused.value.code == "UNAUTHENTICATED"

    a = Collector(app, "app", history=False)
    job = tiny_job(tmp_path / "runs", steps=24, **{"run.batch_size": 2, "dist.workers": 1})
    app.start_run(job_toml_for_engine(job), client="app")
    with pytest.raises(EngineRefused, match="busy with a run") as busy:
        app.start_run(job_toml_for_engine(job), client="app")
    assert busy.value.code == "FAILED_PRECONDITION"
    a.until(train_step_at_least(3))
    app.close()  # the app is gone mid-run (its connection drops, as when it is killed)

    late = EngineClient(info.address, info.key)
    b = Collector(late, "late", history=True)
    b.until(is_mark("history_end"))
    attached = b.items[0]
    assert attached.change == "attached" and attached.run.active and attached.run.client == "app"
    run_dir = Path(attached.run.run_dir)
    b.until(is_mark("ended"))
    end = next(filter(is_mark("ended"), b.items)).run
    assert end.state == "finished" and not end.active and end.step == 24
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 25))
    assert b.metric_rows() == rows  # history, then live: no row lost or repeated at the seam
    assert b.marks() == ["attached", "history_end", "ended"]
    assert [s.state for s in b.items if isinstance(s, StateEvent)][-1] == "finished"

    for command, expect in (
        ("status", "ended: finished, step 24 of 24"),
        ("attach", "run folder:"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "engine.cli.main", command], capture_output=True, text=True,
            timeout=120, env={**os.environ, DIR_ENV: str(folder)},
        )  # fmt: skip
        assert out.returncode == 0 and expect in out.stdout, out.stdout + out.stderr
    b.stream.cancel()
    left = time.monotonic()
    assert wait_gone(info.pid, 30)  # no run, no client: it exits after its 2 s idle time
    assert time.monotonic() - left >= 1.5
    assert not (folder / CONNECTION_FILE).exists() and not (folder / SOCKET_FILE).exists()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_clients_starting_at_once_share_one_engine_which_a_last_release_ends(folder: Path) -> None:
    got: list[EngineClient] = []
    starters = [
        threading.Thread(target=lambda: got.append(connect_engine(folder))) for _ in range(3)
    ]
    for s in starters:
        s.start()
    for s in starters:
        s.join(120)
    pids = {c.status().pid for c in got}
    assert len(got) == 3 and len(pids) == 1  # the folder's lock admitted one engine
    watch = Collector(got[0], "app", history=True)
    watch.until(is_mark("history_end"))
    assert watch.items[0].run is None  # a fresh engine has no run to replay
    assert not got[1].release("other")  # a client is still attached
    watch.stream.cancel()
    assert got[0].release("app")
    assert wait_gone(pids.pop(), 15)
