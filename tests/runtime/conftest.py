"""Fixtures shared with the worker tests (a trust folder for a test acting as coordinator)."""

from tests.worker.agent_fixtures import coordinator_home  # noqa: F401 - a fixture
