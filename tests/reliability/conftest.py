"""Shared fixtures: the real stories260K tokenizer, and a folder snapshot (names -> sha256)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.worker.remote_procs import report_logs

MODEL = Path(__file__).resolve().parents[2] / "resources" / "models" / "stories260K"


@pytest.fixture(scope="session")
def tok():
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    return load_tokenizer(MODEL)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the sha256 of its bytes (to prove nothing changed)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries its processes' logs (tests/worker/remote_procs.py)."""
    outcome = yield
    report_logs(item, outcome.get_result())
