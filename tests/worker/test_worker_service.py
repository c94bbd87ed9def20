"""A real worker process over gRPC: auth, files, call order, stop."""

import hashlib

import grpc
import pytest

from engine.machine import PROTOCOL_VERSION
from engine.rpc.worker_client import WorkerCallError, WorkerClient


def test_describe_needs_the_token(local_worker):
    worker, token = local_worker
    with WorkerClient(worker.address, token, timeout_s=10) as good:
        good.wait_ready(timeout_s=30)
        info = good.describe()
        assert (
            info["protocol_version"] == PROTOCOL_VERSION
            and not info["busy"]
            and info["mlx_version"]
        )
    for bad_token in ("wrong", ""):
        with WorkerClient(worker.address, bad_token or "x", timeout_s=10) as bad:
            if not bad_token:
                bad._md = ()  # no metadata at all
            with pytest.raises(WorkerCallError) as e:
                bad.describe()
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_put_file_round_trip_and_refusals(local_worker, tmp_path):
    worker, token = local_worker
    data = bytes(range(256)) * 9000  # > 2 chunks of 1 MiB
    f = tmp_path / "train.jsonl"
    f.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    with WorkerClient(worker.address, token, timeout_s=10) as c:
        assert not c.has_file(digest)
        assert c.put_file(f, digest) == len(data)
        assert c.has_file(digest)
        with pytest.raises(WorkerCallError) as e:
            c.put_file(f, digest, name="../escape.jsonl")
        assert (
            e.value.code == grpc.StatusCode.INVALID_ARGUMENT
            and "plain file name" in e.value.details
        )
        with pytest.raises(WorkerCallError) as e:
            c.put_file(f, "0" * 64)
        assert (
            e.value.code == grpc.StatusCode.INVALID_ARGUMENT
            and "sha256 mismatch" in e.value.details
        )
    assert not list((tmp_path / "data").rglob("escape.jsonl"))


def test_calls_out_of_order_fail_with_a_clear_message(local_worker):
    worker, token = local_worker
    with WorkerClient(worker.address, token, timeout_s=10) as c:
        calls = (lambda: c.step(0, 1e-3), lambda: c.evaluate(0, 1), lambda: c.get_state(0),
                 lambda: c.regroup(0, 1, ["a"], "t"))  # fmt: skip
        for call in calls:
            with pytest.raises(WorkerCallError) as e:
                call()
            assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "call SetupJob first" in e.value.details
        with pytest.raises(WorkerCallError) as e:
            c.setup_job(
                "", rank=2, world_size=2, peers=["a", "b"], run_id="r", files={}, group_token="t"
            )
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "rank 2" in e.value.details
        with pytest.raises(WorkerCallError) as e:
            c.setup_job("[run]\nsteps = 'x'\n", 0, 1, [], "r", {}, "")
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "run.steps" in e.value.details


def test_stop_ends_the_job_and_the_lifeline_ends_the_process(local_worker):
    from engine.runtime.local_workers import stop_local_workers

    worker, token = local_worker
    with WorkerClient(worker.address, token, timeout_s=10) as c:
        c.stop("test")
        assert c.describe()["busy"] is False  # still serving: a pooled worker takes the next job
    stop_local_workers([worker], grace_s=15)  # closes the stdin lifeline
    assert worker.proc.returncode == 0
