"""A network worker closes a job whose coordinator has gone quiet for its lease; a live
coordinator that is merely slow between calls (a long checkpoint write, a slow GUI sink)
keeps its jobs with keep-alives. Real processes: a paired `orchard worker` agent over TLS."""

from __future__ import annotations

import time

import pytest

from engine.events import MetricEvent, StateEvent
from engine.runtime import cluster, start_run
from tests.runtime.helpers import tiny_job
from tests.worker.agent_fixtures import paired_agent_at

LEASE_S = 3.0  # short for the test; the agent's default is 300 s
GAP_S = 2.5 * LEASE_S  # the coordinator holds still this long after step 2


@pytest.fixture
def paired_agent(tmp_path, coordinator_home):
    with paired_agent_at(tmp_path / "agent", LEASE_S) as (_, address):
        yield address


class SlowSink:
    """Holds the coordinator's thread after step 2, with no call in flight."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.held = False

    def __call__(self, event: object) -> None:
        self.events.append(event)
        if isinstance(event, MetricEvent) and event.kind == "train" and event.step == 2:
            if not self.held:  # once: a redone step 2 goes on at once
                self.held = True
                time.sleep(GAP_S)

    def recoveries(self) -> list[dict]:
        return [
            e.detail for e in self.events if isinstance(e, StateEvent) and e.detail.get("recovered")
        ]


def _run(tmp_path, address: str) -> tuple[object, SlowSink]:
    sink = SlowSink()
    job = tiny_job(tmp_path, 5, **{"dist.hosts": [address], "dist.step_timeout_s": 60.0})
    result = start_run(job, sink, data_dir=tmp_path / "cache").wait(240)
    assert result is not None and result.status == "finished", result
    return result, sink


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_keep_alives_hold_the_job_through_a_gap_longer_than_its_lease(
    tmp_path, paired_agent, monkeypatch
):
    monkeypatch.setattr(cluster, "KEEPALIVE_S", LEASE_S / 4)
    _, sink = _run(tmp_path, paired_agent)
    assert sink.recoveries() == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_without_keep_alives_the_lease_ends_the_job_and_the_run_recovers(
    tmp_path, paired_agent, monkeypatch
):
    """The control: the same gap with no keep-alive loses the job (so the test above can
    fail); the worker answers, so it rejoins and the run still finishes."""
    monkeypatch.setattr(cluster, "KEEPALIVE_S", 10 * GAP_S)
    result, sink = _run(tmp_path, paired_agent)
    (lost,) = sink.recoveries()
    assert "job lost" in (result.run_dir / "log.txt").read_text()
    assert lost["lost"] == [paired_agent]
