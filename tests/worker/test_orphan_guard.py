"""OrphanGuard on its own: the lease, calls in flight, keep-alives and cancelled calls.

The job it ends is a recorder standing in for JobRunner (the layer above); the end-to-end
proof with real processes is test_orphaned_jobs.py.
"""

from __future__ import annotations

import threading
import time

import pytest

from engine.worker.orphans import OrphanGuard

LEASE_S = 0.3


class Ended:
    """Records end_job calls and, like JobRunner, tells the guard the job is gone."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []
        self.event = threading.Event()
        self.guard: OrphanGuard | None = None

    def __call__(self, job_id: str, reason: str, kill: bool) -> None:
        self.calls.append((job_id, reason, kill))
        assert self.guard is not None
        self.guard.job_ended(job_id)
        self.event.set()


@pytest.fixture
def guarded():
    ended = Ended()
    guard = ended.guard = OrphanGuard(LEASE_S, ended)
    yield guard, ended
    guard.close()


def test_the_lease_ends_an_idle_job_once(guarded):
    guard, ended = guarded
    guard.job_started("j1")
    assert ended.event.wait(10 * LEASE_S + 5)
    time.sleep(3 * LEASE_S)
    assert len(ended.calls) == 1
    job_id, reason, kill = ended.calls[0]
    assert (job_id, kill) == ("j1", False) and "no call from its coordinator" in reason


def test_calls_in_flight_and_keep_alives_hold_the_lease(guarded):
    guard, ended = guarded
    guard.job_started("j1")
    ticket = guard.begin("Step", "j1")
    assert not ended.event.wait(4 * LEASE_S)  # a long Step holds the job
    guard.end(ticket, client_gone=False)
    for _ in range(8):  # keep-alives a third of a lease apart
        guard.renew("j1")
        assert not ended.event.wait(LEASE_S / 3)
    for _ in range(8):  # another job's keep-alive does not count
        guard.renew("j0")
        if ended.event.wait(LEASE_S / 3):
            break
    assert [c[0] for c in ended.calls] == ["j1"]


def test_a_cancelled_call_ends_its_job_at_once_and_a_finished_one_does_not(guarded):
    guard, ended = guarded
    guard.job_started("j1")
    done = guard.begin("Evaluate", "j1")
    guard.end(done, client_gone=False)
    guard.call_closed(done)  # gRPC's callback after a normal end: nothing to do
    guard.renew("j1")
    running = guard.begin("Step", "j1")
    guard.call_closed(running)  # fired while the handler still runs: the client vanished
    assert ended.event.wait(LEASE_S / 2)  # well before the lease could have ended it
    job_id, reason, kill = ended.calls[0]
    assert (job_id, kill) == ("j1", True) and "Step call was cancelled" in reason
    guard.end(running, client_gone=True)  # the handler returns later: no second end
    time.sleep(LEASE_S / 2)
    assert len(ended.calls) == 1


def test_a_handler_that_ends_on_a_cancelled_call_ends_the_job(guarded):
    guard, ended = guarded
    guard.job_started("j2")
    ticket = guard.begin("PutState", "j2")
    guard.end(ticket, client_gone=True)  # its stream broke: the coordinator is gone
    assert ended.event.wait(LEASE_S / 2)
    assert ended.calls[0][0] == "j2" and ended.calls[0][2] is True


def test_the_lease_must_be_positive():
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="expected seconds > 0"):
            OrphanGuard(bad, lambda *_: None)


def test_the_agent_flag_takes_positive_seconds(capsys):
    from engine.worker.agent import DEFAULT_JOB_LEASE_S, parse_args

    assert parse_args([]).job_lease_s == DEFAULT_JOB_LEASE_S
    assert parse_args(["--job-lease-s", "2.5"]).job_lease_s == 2.5
    for bad in ("0", "-3", "soon", "nan"):
        with pytest.raises(SystemExit):
            parse_args(["--job-lease-s", bad])
        assert (
            f"--job-lease-s: expected seconds in (0, 604800], got '{bad}'"
            in capsys.readouterr().err
        )
