"""The coordinator ("embedded engine"): a JobSpec becomes a run over worker processes.

The names below load on first use (PEP 562), so a caller that only spawns local workers
(engine/runtime/warm_workers.py, before the CLI's preflight) does not import MLX first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.runtime.coordinator import RunResult
    from engine.runtime.run_handle import RunHandle, start_run

__all__ = ["RunHandle", "RunResult", "start_run"]


def __getattr__(name: str) -> Any:
    if name == "RunResult":
        from engine.runtime.coordinator import RunResult

        return RunResult
    if name in ("RunHandle", "start_run"):
        from engine.runtime import run_handle

        return getattr(run_handle, name)
    raise AttributeError(f"module 'engine.runtime' has no attribute {name!r}")
