"""JobRunner ending a job from outside its call (the orphan guard after a cancelled Step).

The job is a stand-in for the job process (the layer below JobRunner): its Step waits until
killed and then takes its time to fail, as a Step thread does when a loaded machine leaves it
unscheduled for a while. The end-to-end proofs with real processes are test_orphaned_jobs.py
and test_orphaned_netns.py.
"""

from __future__ import annotations

import threading

import pytest

import engine.worker.job_process as job_process
from engine.worker.errors import JobLost
from engine.worker.job import JobRunner, SetupResult

WAIT_S = 10.0  # only a broken runner waits this long


class SlowToUnwind:
    """A job whose Step waits to be killed, then fails only once ``unwind`` is set."""

    def __init__(self) -> None:
        self.in_step, self.killed, self.unwind = (threading.Event() for _ in range(3))

    def describe(self) -> SetupResult:
        return SetupResult(1, 1, "stand-in job")

    def step(self, step: int, lr: float, *split: object) -> None:  # split: shares, micro_batches
        self.in_step.set()
        assert self.killed.wait(WAIT_S)
        assert self.unwind.wait(WAIT_S)
        raise job_process.JobCrashed("the job process died (exit code -9)")

    def kill(self) -> None:
        self.killed.set()

    def close(self, timeout_s: float = 0.0) -> None:
        pass


@pytest.fixture
def runner(tmp_path, monkeypatch):
    jobs: list[SlowToUnwind] = []

    def start(mailbox, args, spawned):
        jobs.append(SlowToUnwind())
        return jobs[-1]

    monkeypatch.setattr(job_process.ProcessJob, "start", staticmethod(start))
    monkeypatch.setattr(job_process, "Spawned", lambda: None)
    told: list[bool] = []
    r = JobRunner(tmp_path, on_busy=told.append, job_process=True, job_lease_s=60.0,
                  warm_spare=False)  # fmt: skip
    yield r, jobs, told
    for job in jobs:
        job.killed.set()
        job.unwind.set()
    r.close()


def _setup(r: JobRunner) -> str:
    return r.setup("", 0, 1, [], {}, run_id="run").job_id


def test_an_ended_job_reads_idle_while_its_call_unwinds(runner):
    r, jobs, told = runner
    job_id = _setup(r)
    assert r.busy and told == [True]
    failed: list[BaseException] = []

    def step_call() -> None:  # what the servicer's Step does; is_active: its client is gone
        with r.coordinator_call("Step", job_id, lambda: False) as ticket:
            tickets.append(ticket)
            try:
                r.step(0, 0.01, job_id)
            except JobLost as e:
                failed.append(e)

    tickets: list = []
    call = threading.Thread(target=step_call)
    call.start()
    assert jobs[0].in_step.wait(WAIT_S)
    r.guard.call_closed(tickets[0])  # gRPC's callback: the Step's client vanished
    assert jobs[0].killed.wait(WAIT_S)
    # The job process is gone, the Step has not returned yet: the worker already reads idle.
    assert r.busy is False and told == [True, False]
    # A coordinator that saw it idle sets a new job up: SetupJob waits for the Step to unwind.
    new: list[str] = []
    setup = threading.Thread(target=lambda: new.append(_setup(r)))
    setup.start()
    jobs[0].unwind.set()
    call.join(WAIT_S)
    setup.join(WAIT_S)
    assert len(failed) == 1 and isinstance(failed[0], job_process.JobCrashed)
    assert new and new[0] != job_id and r.busy and r.job_id == new[0]
    with pytest.raises(JobLost, match="its coordinator's Step call was cancelled"):
        r.step(1, 0.01, job_id)  # a late call of the ended job is told why it ended
