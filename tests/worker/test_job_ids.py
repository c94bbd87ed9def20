"""Job ids over a real worker process: a call of a job that is gone says so (job_lost), and a
Stop of an earlier job never ends the job set up since."""

from __future__ import annotations

import grpc
import pytest

from engine.rpc.worker_client import WorkerCallError, WorkerClient
from tests.worker.remote_jobs import set_up_job


def _fails(call) -> WorkerCallError:
    with pytest.raises(WorkerCallError) as e:
        call()
    return e.value


def test_stale_calls_never_touch_a_newer_job(local_worker, tmp_path):
    worker, token = local_worker
    with WorkerClient(worker.address, token, timeout_s=30) as c:
        c.wait_ready(timeout_s=30)
        first = set_up_job(c, tmp_path / "runs", "first")
        second = set_up_job(c, tmp_path / "runs", "second")  # replaces the first job
        assert first and second and first != second
        c.job_id = first
        e = _fails(lambda: c.step(0, 0.01))
        assert e.code == grpc.StatusCode.ABORTED and e.job_lost and not e.unreachable
        assert e.details.startswith(f"job lost: Step: job {first} is no longer on this worker")
        assert f"replaced by job {second} (run second" in e.details
        c.stop("a stale stop")  # the first job's Stop: ignored
        assert c.describe()["busy"] is True
        c.job_id = second
        assert c.step(0, 0.01).tokens > 0
        c.stop("done")  # its own Stop ends it; its later calls are out of order, not lost
        assert c.describe()["busy"] is False
        e = _fails(lambda: c.evaluate(1, 1))
        assert e.code == grpc.StatusCode.FAILED_PRECONDITION and not e.job_lost
        assert f"job {second} was stopped (Stop: done); call SetupJob first" in e.details
        c.job_id = "feedfacefeedface"  # e.g. a job of the worker before it restarted
        e = _fails(lambda: c.get_state(1))
        assert (
            e.job_lost
            and "the worker may have restarted" in e.details
            and "it is idle" in e.details
        )
