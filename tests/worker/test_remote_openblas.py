"""A network worker's job processes get the OpenBLAS preload that local workers get: without
it their compute was ~8x slower on Linux (issue 12, "What we already measured")."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.worker.blas import find_openblas
from tests.worker.remote_procs import start_agent
from tests.worker.test_warm_spare import wait_spares

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_a_network_workers_job_process_has_openblas_mapped(tmp_path, monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("ORCHARD_OPENBLAS", raising=False)
    if find_openblas("auto") is None:
        pytest.skip("no system OpenBLAS here (apt-get install libopenblas0-pthread)")
    proc, _ = start_agent(tmp_path / "w", host="127.0.0.1")
    try:
        (spare,) = wait_spares(proc.log_path, 1)  # the job process a SetupJob would take
        maps = Path(f"/proc/{spare}/maps").read_text()
        assert "libopenblas" in maps
        agent_maps = Path(f"/proc/{proc.proc.pid}/maps").read_text()
        assert "libopenblas" not in agent_maps  # only its children start with the preload
    finally:
        proc.close()
