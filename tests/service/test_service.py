"""EngineService with a scripted run: one run at a time, history then live, idle exit."""

from __future__ import annotations

import threading
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
from engine.service import watchers
from engine.service.info import RunMark
from engine.service.service import BadRequest, EngineBusy, EngineClosing, EngineService
from engine.train.metrics import MetricsLog, read_metrics

JOB = JobSpec().to_toml()


class ScriptedRun:
    """A launch function whose run emits what the test tells it to, then ends."""

    def __init__(self) -> None:
        self.sink = None
        self.stop: threading.Event | None = None
        self.resume_from: str | None = None
        self.launched = threading.Event()
        self.finish = threading.Event()
        self.status = "finished"

    def __call__(self, job, sink, stop, resume_from):
        self.sink, self.stop, self.resume_from = sink, stop, resume_from
        self.status = "finished"  # unless this run is stopped
        self.launched.set()
        return self

    def wait(self):
        while not self.finish.wait(0.01):
            if self.stop is not None and self.stop.is_set():
                self.status = "stopped"
                break
        self.sink(StateEvent(self.status, "end", ""))
        return type("Result", (), {"status": self.status, "message": ""})()


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(run: ScriptedRun, clock: Clock | None = None, **kw) -> EngineService:
    kw.setdefault("keep_awake", lambda: type("A", (), {"release": lambda self: None})())
    kw.setdefault("announce", lambda title, text: None)
    return EngineService(launch=run, clock=clock or Clock(), **kw)


def drain(w: watchers.Watcher) -> list:
    out, batch = [], w.get(0)
    while batch:
        out += batch
        batch = w.get(0)
    return out


def train_steps(items: list) -> list[int]:
    return [i.step for i in items if isinstance(i, MetricEvent) and i.kind == "train"]


def test_one_run_at_a_time_and_bad_requests_are_named(tmp_path: Path) -> None:
    run = ScriptedRun()
    svc = make(run)
    with pytest.raises(BadRequest, match="run.steps"):
        svc.start(JOB.replace("steps = 200", "steps = 0"))
    with pytest.raises(BadRequest, match="not a run folder"):
        svc.start(JOB, resume_from=str(tmp_path))
    info = svc.start(JOB, client="a")
    assert info.active and info.client == "a"
    assert run.launched.wait(5)
    run.sink(StateEvent("preparing", "starting workers", str(tmp_path / "r1")))
    with pytest.raises(EngineBusy, match=f"busy with a run in {tmp_path / 'r1'}"):
        svc.start(JOB, client="b")
    assert svc.stop("test").run_id == info.run_id  # stop reaches the run's stop event
    assert svc.wait_run(5)
    assert svc.status().run.state == "stopped" and not svc.status().run.active
    assert svc.stop() is None  # nothing going: a stop is a no-op
    svc.start(JOB)  # the next run may start now
    run.finish.set()
    assert svc.wait_run(5)


def test_a_late_client_gets_history_then_live_without_gap_or_repeat() -> None:
    run = ScriptedRun()
    svc = make(run)
    early = svc.watch("early", history=False)
    svc.start(JOB)
    assert run.launched.wait(5)
    n, late_box = 3000, {}

    def produce() -> None:
        run.sink(StateEvent("running", "", "", {"start_step": 0, "total_steps": n}))
        for s in range(1, n + 1):
            run.sink(MetricEvent(s, {"train_loss": 1.0 / s}))
            run.sink(ProgressEvent(s, n, 0.1 * s, 1.0))
            if s == n // 2:
                late_box["w"] = svc.watch("late")  # attaches while the run emits
        run.finish.set()

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(30)
    assert svc.wait_run(5)
    late_items = drain(late_box["w"])
    marks = [i.change for i in late_items if isinstance(i, RunMark)]
    assert marks == ["attached", "history_end", "ended"]
    assert train_steps(late_items) == list(range(1, n + 1))  # every step exactly once, in order
    end_of_history = late_items.index(
        next(i for i in late_items if isinstance(i, RunMark) and i.change == "history_end")
    )
    history = late_items[:end_of_history]
    assert isinstance(history[-1], ProgressEvent)  # the last progress closes the replay
    assert train_steps(drain(early)) == list(range(1, n + 1))
    assert svc.status().clients == 2


def test_a_recovery_drops_the_redone_steps_as_metrics_jsonl_does(tmp_path: Path) -> None:
    run = ScriptedRun()
    svc = make(run)
    svc.start(JOB)
    assert run.launched.wait(5)
    log = MetricsLog(tmp_path, run.sink)  # the coordinator's way: the file, then the sink
    run.sink(StateEvent("running", "", str(tmp_path), {"start_step": 0, "total_steps": 6}))
    for s in range(1, 6):
        log.emit(MetricEvent(s, {"train_loss": float(s)}))
        log.emit(MetricEvent(s, {"compute_s": 0.1}, kind="worker", worker=1))
    log.close()
    run.sink(StateEvent("running", "lost one", str(tmp_path), {"recovered": True, "redo_from": 3}))
    log = MetricsLog(tmp_path, run.sink, resume_step=3)
    for s in range(4, 7):
        log.emit(MetricEvent(s, {"train_loss": float(s) + 0.5}))
    log.close()
    run.finish.set()
    assert svc.wait_run(5)
    replay = [e.to_json() for e in drain(svc.watch("late")) if isinstance(e, MetricEvent)]
    assert replay == read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in replay if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_a_resumed_run_replays_its_earlier_steps_from_the_run_folder(tmp_path: Path) -> None:
    before = MetricsLog(tmp_path, None)
    for s in range(1, 5):
        before.emit(MetricEvent(s, {"train_loss": 3.0 - s / 10}))
        before.emit(MetricEvent(s, {"step_time_s": 0.2}, kind="worker", worker=0))
    before.emit(MetricEvent(4, {"val_loss": 2.0}, kind="val"))
    before.close()
    JobSpec().save(tmp_path / "job.toml")
    run = ScriptedRun()
    svc = make(run)
    svc.start(JOB, resume_from=str(tmp_path))
    assert run.launched.wait(5) and run.resume_from == str(tmp_path)
    run.sink(StateEvent("preparing", "", str(tmp_path)))
    log = MetricsLog(tmp_path, run.sink, resume_step=4)
    run.sink(StateEvent("running", "", str(tmp_path), {"start_step": 4, "total_steps": 6}))
    for s in (5, 6):
        log.emit(MetricEvent(s, {"train_loss": 2.0}))
    log.close()
    run.finish.set()
    assert svc.wait_run(5)
    replay = [e.to_json() for e in drain(svc.watch("late")) if isinstance(e, MetricEvent)]
    assert replay == read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in replay if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_the_engine_is_idle_only_with_no_run_and_no_client() -> None:
    clock, run = Clock(), ScriptedRun()
    svc = make(run, clock, idle_exit_s=60)
    assert not svc.should_exit()
    clock.t = 60
    assert svc.should_exit()  # started and nobody came
    w = svc.watch("app")
    clock.t = 1000
    assert not svc.should_exit()  # a client is attached
    svc.start(JOB, client="app")
    svc.unwatch(w)  # the app closed; the run trains on
    clock.t = 5000
    assert not svc.should_exit()
    run.finish.set()
    assert svc.wait_run(5)
    assert not svc.should_exit()  # idle from the run's end...
    clock.t = 5060
    assert svc.should_exit()  # ...for idle_exit_s
    assert svc.close_if_idle()
    with pytest.raises(EngineClosing):
        svc.start(JOB)


def test_release_exits_at_once_only_when_idle() -> None:
    run = ScriptedRun()
    svc = make(run)
    svc.watch("a")
    svc.watch("b")
    assert not svc.release("a")  # b is still attached
    svc.start(JOB)
    assert not svc.release("b")  # a run is going
    run.finish.set()
    assert svc.wait_run(5) and svc.should_exit() is False
    assert svc.release("c")  # idle: a leaving client lets it exit now
    assert svc.should_exit()


def test_keep_awake_spans_the_run_and_a_notification_only_with_nobody_watching() -> None:
    held, said = [], []

    class Awake:
        def __init__(self) -> None:
            held.append(True)

        def release(self) -> None:
            held[-1] = False

    run = ScriptedRun()
    svc = make(run, keep_awake=Awake, announce=lambda title, text: said.append(text))
    w = svc.watch("app")
    svc.start(JOB)
    assert run.launched.wait(5) and held == [True]
    run.finish.set()
    assert svc.wait_run(5) and held == [False] and said == []  # the app saw it end
    svc.unwatch(w)
    run.finish.clear()
    svc.start(JOB)
    run.sink(StateEvent("running", "", "/runs/run-7", {"start_step": 0, "total_steps": 9}))
    run.finish.set()
    assert svc.wait_run(5)
    assert said == ["run-7 finished: step 0 of 9"]


def test_a_client_that_stops_reading_is_dropped_not_buffered_forever(monkeypatch) -> None:
    monkeypatch.setattr(watchers, "MAX_PENDING", 50)
    run = ScriptedRun()
    svc = make(run)
    stuck = svc.watch("stuck")
    svc.start(JOB)
    assert run.launched.wait(5)
    for s in range(100):
        run.sink(LogEvent("info", f"line {s}"))
    assert stuck.closed and stuck.overflowed and svc.status().clients == 0
    run.finish.set()
    assert svc.wait_run(5)


def test_a_failing_launch_ends_the_run_failed_with_its_reason() -> None:
    def launch(job, sink, stop, resume_from):
        raise RuntimeError("no workers could start: port in use")

    svc = make(launch)  # type: ignore[arg-type]
    w = svc.watch("app", history=False)
    svc.start(JOB)
    assert svc.wait_run(5)
    items = drain(w)
    failed = [i for i in items if isinstance(i, StateEvent)]
    assert failed[-1].state == "failed" and "port in use" in failed[-1].message
    assert isinstance(items[-1], RunMark) and items[-1].change == "ended"
    assert items[-1].run.state == "failed" and not items[-1].run.active


def test_transfers_replay_while_preparing_and_then_no_more() -> None:
    run = ScriptedRun()
    svc = make(run)
    svc.start(JOB)
    assert run.launched.wait(5)
    run.sink(StateEvent("preparing", "starting workers", "/runs/r"))
    run.sink(DownloadEvent("org/model", "model.safetensors", 5, 10, 0, 1))
    for sent in (1, 4):
        run.sink(ShipEvent("127.0.0.1:1", 0, sent, 4, sent // 4, 1))
    run.sink(ShipEvent("127.0.0.1:2", 1, 0, 0, 0, 0, held_bytes=4, done=True))
    replay = [i for i in drain(svc.watch("early")) if isinstance(i, (DownloadEvent, ShipEvent))]
    assert [(type(e).__name__, getattr(e, "sent_bytes", None)) for e in replay] == [
        ("DownloadEvent", None),
        ("ShipEvent", 4),
        ("ShipEvent", 0),
    ]  # the last of each transfer only
    run.sink(StateEvent("running", "", "/runs/r", {"start_step": 0, "total_steps": 9}))
    assert not [i for i in drain(svc.watch("late")) if isinstance(i, (DownloadEvent, ShipEvent))]
    run.finish.set()
    assert svc.wait_run(5)
