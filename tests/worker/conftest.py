import pytest

from engine.rpc.auth import new_token
from engine.runtime.local_workers import start_local_worker, stop_local_workers
from tests.worker.agent_fixtures import coordinator_home, paired  # noqa: F401 - fixtures
from tests.worker.remote_procs import report_logs


@pytest.fixture
def local_worker(tmp_path):
    """One real worker process on a real socket, and its token; always stopped afterwards."""
    token = new_token()
    worker = start_local_worker(token, tmp_path / "data", tmp_path / "worker.log", timeout_s=60)
    try:
        yield worker, token
    finally:
        stop_local_workers([worker], grace_s=5)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report_logs(item, outcome.get_result())
