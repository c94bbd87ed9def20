"""Events on the engine's wire, the connection file, the lock, and the platform bits."""

from __future__ import annotations

import logging
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from engine.config import JobSpec
from engine.events import (
    DownloadEvent,
    LogEvent,
    MetricEvent,
    ProgressEvent,
    ShipEvent,
    StateEvent,
)
from engine.rpc.engine_wire import event_from_pb, event_to_pb, status_from_pb, status_to_pb
from engine.rpc.gen import engine_pb2 as pb
from engine.service.connection import (
    ConnectionInfo,
    EngineLock,
    listen_address,
    read_connection,
    remove_connection,
    write_connection,
)
from engine.service.info import EngineStatus, RunInfo, RunMark
from engine.service.launcher import job_toml_for_engine
from engine.service.notify import notify
from engine.service.power import AwakeAssertion

RUN = RunInfo("7-1", "/runs/a", "running", True, "[run]\n", 3, 9, "m", "", "app-1")


@pytest.mark.parametrize(
    "event",
    [
        MetricEvent(3, {"train_loss": 2.5, "tokens_per_s": 900.0}, "train", None, 12.5),
        MetricEvent(3, {"compute_s": 0.5, "comm_s": 0.1}, "worker", 0, 13.0),
        MetricEvent(4, {}, "val", None, 14.0),
        ProgressEvent(3, 9, 1.5, None),
        ProgressEvent(3, 9, 1.5, 0.0),
        StateEvent("running", "3 steps", "/runs/a", {"start_step": 0, "lost": ["h:1"]}),
        StateEvent("preparing"),
        LogEvent("warning", "worker lost", 15.0),
        DownloadEvent("org/model", "model.safetensors", 5, 10, 1, 2),
        DownloadEvent("org/model", "", 10, 10, 2, 2, finished=True),
        ShipEvent("127.0.0.1:5", 1, 5, 10, 1, 2, 3, "model.safetensors", 2.5e6, False),
        RunMark("attached", None),
        RunMark("ended", RUN),
    ],
)
def test_every_event_crosses_the_wire_unchanged(event) -> None:
    wire = pb.EngineEvent.FromString(event_to_pb(event).SerializeToString())
    assert event_from_pb(wire) == event


def test_status_crosses_the_wire() -> None:
    for status in (EngineStatus("1", 42, 2, RUN, 1.5), EngineStatus("1", 42, 0, None, 1.5)):
        assert (
            status_from_pb(pb.EngineStatus.FromString(status_to_pb(status).SerializeToString()))
            == status
        )


def test_the_connection_file_is_private_and_a_bad_one_is_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "engine"
    info = ConnectionInfo("unix:/x/engine.sock", "secret", os.getpid(), "1", 2.0)
    path = write_connection(folder, info)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert read_connection(folder) == info
    remove_connection(folder, pid=os.getpid() + 1)  # not this engine's file: kept
    assert path.exists()
    remove_connection(folder, pid=os.getpid())
    assert read_connection(folder) is None
    path.write_text('{"address": 3}')
    assert read_connection(folder) is None


def test_one_engine_per_folder(tmp_path: Path) -> None:
    first, second = EngineLock(tmp_path), EngineLock(tmp_path)
    assert first.acquire()
    assert not second.acquire() and second.held_by_someone()
    first.release()
    assert not second.held_by_someone() and second.acquire()
    second.release()


def test_a_socket_path_too_long_for_the_os_falls_back_to_loopback(tmp_path: Path) -> None:
    assert listen_address(Path("/tmp/oe-x")) == "unix:/tmp/oe-x/engine.sock"
    deep = tmp_path / ("d" * 120)
    assert listen_address(deep) == "127.0.0.1:0"


def test_the_job_sent_to_the_engine_has_absolute_paths(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text("{}\n")
    job = JobSpec().with_overrides(['data.path="data.jsonl"', 'run.out_dir="runs"'])
    sent = JobSpec.from_toml(job_toml_for_engine(job, cwd=tmp_path))
    assert sent.data.path == str(tmp_path / "data.jsonl")
    assert sent.run.out_dir == str(tmp_path / "runs")
    assert sent.model.path == "demo"  # the bundled model keeps its name
    hf = JobSpec().with_overrides(['model.path="Qwen/Qwen2.5-0.5B"'])
    assert (
        JobSpec.from_toml(job_toml_for_engine(hf, cwd=tmp_path)).model.path == "Qwen/Qwen2.5-0.5B"
    )


def test_off_macos_keep_awake_and_notifications_are_skipped_with_a_log_line(caplog) -> None:
    caplog.set_level(logging.INFO)
    awake = AwakeAssertion(platform="linux")
    assert not awake.held
    awake.release()
    assert not notify("Orchard", "run-1 finished", platform="linux")
    assert "keep-awake skipped" in caplog.text and "notification skipped" in caplog.text


@pytest.mark.skipif(sys.platform == "win32", reason="shell scripts stand in for the macOS tools")
def test_on_macos_caffeinate_holds_while_the_run_trains_and_osascript_notifies(
    tmp_path: Path, monkeypatch
) -> None:
    """The macOS commands as they are run, with stand-ins for the two tools."""
    said = tmp_path / "said.txt"
    (tmp_path / "caffeinate").write_text(
        f'#!/bin/sh\necho "$@" > {tmp_path}/a.tmp && mv {tmp_path}/a.tmp {tmp_path}/awake.txt\n'
        "exec sleep 60\n"
    )
    (tmp_path / "osascript").write_text(f'#!/bin/sh\nprintf "%s" "$2" > {said}\n')
    for tool in ("caffeinate", "osascript"):
        (tmp_path / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    awake = AwakeAssertion(pid=4242, platform="darwin")
    assert awake.held
    deadline = time.monotonic() + 10
    while not (tmp_path / "awake.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the stand-in has started and said how it was called
    awake.release()
    assert not awake.held
    assert (tmp_path / "awake.txt").read_text().split() == ["-i", "-w", "4242"]
    assert notify("Orchard", 'run "7" finished', platform="darwin")
    assert said.read_text() == 'display notification "run \\"7\\" finished" with title "Orchard"'
