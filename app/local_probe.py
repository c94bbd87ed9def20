"""Probe this machine from the app: start one local worker process, probe it, stop it.

The app holds no worker between runs, so a probe pays for a short-lived one (~1 s start).
Runs on a pool thread (app.tasks.run_task), never on the GUI thread.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from engine.rpc.auth import new_token
from engine.rpc.probe_client import ProbeResult, probe_worker
from engine.rpc.worker_client import WorkerClient
from engine.runtime.local_workers import start_local_worker, stop_local_workers

START_TIMEOUT_S = 60.0


def probe_this_machine(benchmark_s: float = 1.0) -> ProbeResult:
    """Free memory and matmul speed of this machine, as a local worker process sees them."""
    token = new_token()
    with tempfile.TemporaryDirectory(prefix="orchard-probe-") as tmp:
        worker = start_local_worker(
            token, Path(tmp) / "data", Path(tmp) / "worker.log", timeout_s=START_TIMEOUT_S
        )
        try:
            with WorkerClient(worker.address, token) as client:
                client.wait_ready(timeout_s=START_TIMEOUT_S)
                return probe_worker(client, payload_mb=4, benchmark_s=benchmark_s)
        finally:
            stop_local_workers([worker], grace_s=5)


def describe_probe(name: str, r: ProbeResult, remote: bool = False) -> str:
    """One line for the message bar."""
    link = "from this machine" if remote else "to its worker process"
    return (
        f"{name}: {r.free_memory_bytes / 2**30:.1f} GiB free, "
        f"{r.matmul_gflops:.1f} GFLOP/s (fp32 matmul), round trip {r.rtt_ms:.1f} ms, "
        f"{r.bandwidth_mb_s:.0f} MB/s {link}"
    )
