"""A worker cut off by the network (bytes vanish, no connection reset) is detected, never a
hang: a call fails at its deadline, and a call with a long deadline fails by keepalive."""

from __future__ import annotations

import time

import grpc
import pytest

from engine.rpc.auth import new_token
from engine.rpc.channel import KEEPALIVE_OPTIONS
from engine.rpc.worker_client import WorkerCallError, WorkerClient
from engine.runtime.local_workers import start_local_worker, stop_local_workers
from tests.reliability.blackhole import Blackhole

KEEPALIVE_S = sum(v for k, v in KEEPALIVE_OPTIONS if k.startswith("grpc.keepalive_t")) / 1000


@pytest.fixture
def cut_worker(tmp_path):
    """A real worker reached through a relay that the test can cut."""
    token = new_token()
    w = start_local_worker(token, tmp_path / "data", tmp_path / "worker.log", timeout_s=60)
    relay = Blackhole(("127.0.0.1", w.port))
    try:
        yield w, token, relay
    finally:
        relay.close()
        stop_local_workers([w], grace_s=5)


@pytest.mark.timeout(60)
def test_a_call_to_a_cut_off_worker_fails_at_its_deadline(cut_worker):
    w, token, relay = cut_worker
    with WorkerClient(relay.address, token, timeout_s=3.0) as c:
        assert c.describe()["protocol_version"]
        relay.cut()
        t0 = time.monotonic()
        with pytest.raises(WorkerCallError) as e:
            c.describe()
        waited = time.monotonic() - t0
    assert e.value.code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    assert "Describe" in str(e.value) and relay.address in str(e.value)
    assert waited < 3 * 3.0, f"a 3 s call took {waited:.1f}s to fail"
    assert w.proc.poll() is None  # the worker itself is fine; only the link is gone


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_long_call_to_a_cut_off_worker_fails_by_keepalive_not_its_deadline(cut_worker):
    w, token, relay = cut_worker
    deadline_s = KEEPALIVE_S + 5.0  # keepalive (10 s idle + 5 s for the ack) with room for load
    with WorkerClient(relay.address, token, timeout_s=10.0) as c:
        assert c.describe()["busy"] is False
        rows = c.metric_rows(timeout_s=deadline_s)  # a stream that idles until its deadline
        relay.cut()
        with pytest.raises(WorkerCallError) as e:
            next(rows)  # today: the deadline passes first and the stream just ends
    assert e.value.code == grpc.StatusCode.UNAVAILABLE and "ping" in e.value.details, e.value
