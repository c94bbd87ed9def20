"""Fixtures shared with the worker tests (a trust folder for a test acting as coordinator), and
the logs of a failed test's processes in its report (tests/worker/remote_procs.py)."""

import pytest

from tests.worker.agent_fixtures import coordinator_home  # noqa: F401 - a fixture
from tests.worker.remote_procs import report_logs


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report_logs(item, outcome.get_result())
