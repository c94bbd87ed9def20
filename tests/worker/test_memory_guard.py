"""The worker's memory guard: its limit, and a network worker's job process stopped past it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import resolve_data_path
from engine.machine import REFUSE_SHARE
from engine.worker.job_process import ForwardingMailbox, JobCrashed, ProcessJob
from engine.worker.memory_guard import LIMIT_ENV, WORKERS_ENV, memory_limit
from tests.runtime.helpers import tiny_job

GIB = 2**30


def test_the_limit_shares_the_machine_out_and_a_cap_only_lowers_it():
    assert memory_limit({}, total=24 * GIB) == int(REFUSE_SHARE * 24 * GIB)
    assert memory_limit({WORKERS_ENV: "2"}, total=24 * GIB) == int(REFUSE_SHARE * 12 * GIB)
    assert memory_limit({WORKERS_ENV: "2", LIMIT_ENV: "512"}, total=24 * GIB) == 512 * 2**20
    assert memory_limit({LIMIT_ENV: "99999999"}, total=24 * GIB) == int(REFUSE_SHARE * 24 * GIB)
    assert memory_limit({LIMIT_ENV: "nonsense"}, total=24 * GIB) == int(REFUSE_SHARE * 24 * GIB)
    assert memory_limit({LIMIT_ENV: "64"}, total=0) == 64 * 2**20  # unknown machine, a cap
    assert memory_limit({}, total=0) == 0  # unknown machine, no cap: the guard stays off


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_job_process_past_its_limit_fails_the_call_naming_memory(tmp_path, monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "48")  # the spawned job process inherits it
    over = {"run.batch_size": 64, "data.max_seq_len": 512, "dist.workers": 1}
    job = tiny_job(tmp_path / "runs", steps=3, **over)
    args = dict(job_toml=job.to_toml(), rank=0, world=1, peers=[], group_token="",
                paths={"dataset": Path(resolve_data_path("demo"))}, job_dir=str(tmp_path / "job"))  # fmt: skip
    process = ProcessJob.start(ForwardingMailbox(), args)
    try:
        with pytest.raises(JobCrashed, match="memory limit: the worker's step needed more than "
                                             "its limit of 0.05 GiB"):  # fmt: skip
            process.step(0, 1e-3)
        assert process.proc.exitcode == 86
    finally:
        process.close(timeout_s=5)
