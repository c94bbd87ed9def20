"""Probe against a real worker process: no job needed, plausible figures, clear refusals."""

from __future__ import annotations

import grpc
import pytest

from engine.machine import free_memory_bytes, memory_bytes, parse_vm_stat
from engine.rpc.probe_client import probe_worker
from engine.rpc.worker_client import WorkerCallError, WorkerClient

pytestmark = pytest.mark.timeout(120)

# Real `vm_stat` output from an Apple silicon Mac (16 KiB pages).
VM_STAT = """Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                                3817.
Pages active:                            250380.
Pages inactive:                          246104.
Pages speculative:                         2011.
Pages throttled:                              0.
Pages wired down:                         99735.
Pages purgeable:                           7427.
"""


def test_vm_stat_counts_free_inactive_and_speculative_pages():
    assert parse_vm_stat(VM_STAT) == (3817 + 246104 + 2011) * 16384
    assert parse_vm_stat("") == 0


def test_free_memory_is_positive_and_at_most_the_total():
    assert 0 < free_memory_bytes() <= memory_bytes()


def test_probe_a_worker_without_a_job(local_worker):
    worker, token = local_worker
    with WorkerClient(worker.address, token, timeout_s=20) as c:
        c.wait_ready(timeout_s=30)
        total = c.describe()["memory_bytes"]
        result = probe_worker(c, payload_mb=4, benchmark_s=0.3)
        assert 0 < result.free_memory_bytes <= total
        assert result.matmul_gflops > 0
        assert result.rtt_ms > 0 and result.bandwidth_mb_s > 0
        quick = c.probe(payload=b"x" * 1000)  # no benchmark asked: none run
        assert quick.received_bytes == 1000 and quick.matmul_gflops == 0.0
        assert quick.free_memory_bytes > 0
        assert c.describe()["busy"] is False


def test_probe_refuses_a_bad_benchmark_budget_and_payload_size(local_worker):
    worker, token = local_worker
    with WorkerClient(worker.address, token, timeout_s=20) as c:
        c.wait_ready(timeout_s=30)
        for budget in (-1.0, float("nan"), 1e6):
            with pytest.raises(WorkerCallError) as e:
                c.probe(run_benchmark=True, benchmark_s=budget)
            assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "benchmark_s" in e.value.details
        with pytest.raises(ValueError, match="message limit"):
            probe_worker(c, payload_mb=500)
        assert c.probe().free_memory_bytes > 0


def test_a_probe_just_after_the_start_benchmarks_after_the_start_up_imports(local_worker):
    """The worker imports the training stack as it starts; a benchmark beside that import
    measured the machine at less than half its speed (engine/worker/startup.py)."""
    worker, token = local_worker
    with WorkerClient(worker.address, token, timeout_s=20) as c:
        assert probe_worker(c, payload_mb=0.1, benchmark_s=0.2).matmul_gflops > 0
    lines = worker.log_path.read_text().splitlines()
    imported = [i for i, line in enumerate(lines) if "imported the training stack" in line]
    benchmarked = [i for i, line in enumerate(lines) if "GFLOP/s fp32 matmul" in line]
    assert imported and benchmarked and imported[0] < benchmarked[0], lines


def test_the_benchmark_waits_for_start_up_work_within_its_bound(monkeypatch):
    import threading
    import time

    from engine.machine import PROTOCOL_VERSION
    from engine.worker import probe as probe_module
    from engine.worker import startup

    monkeypatch.setattr(startup, "_waits", [])
    done = threading.Event()
    startup.add(done.wait)
    marks: list[str] = []
    monkeypatch.setattr(probe_module, "matmul_gflops", lambda s: marks.append("bench") or 1.0)
    threading.Timer(0.3, lambda: (marks.append("imported"), done.set())).start()
    probe_module.probe(0, True, 0.1, PROTOCOL_VERSION, settle_s=30.0)
    assert marks == ["imported", "bench"]

    never = threading.Event()  # start-up work that does not end: the bound holds
    startup.add(never.wait)
    t0 = time.monotonic()
    assert probe_module.probe(0, True, 0.1, PROTOCOL_VERSION, settle_s=0.2).matmul_gflops == 1.0
    assert 0.2 <= time.monotonic() - t0 < 5.0
    assert not startup.settle(0.0)
    marks.clear()
    probe_module.probe(0, False, 0.0, PROTOCOL_VERSION, settle_s=30.0)  # no benchmark: no wait
    assert marks == []
