"""The coordinator ("embedded engine"): a JobSpec becomes a run over worker processes."""

from engine.runtime.coordinator import RunResult
from engine.runtime.run_handle import RunHandle, start_run

__all__ = ["RunHandle", "RunResult", "start_run"]
