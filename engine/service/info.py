"""Plain data about the engine process and its run, shared by the service, the wire and clients."""

from __future__ import annotations

from dataclasses import dataclass

ENGINE_PROTOCOL_VERSION = "1"  # bump when engine.proto changes incompatibly


@dataclass(frozen=True)
class RunInfo:
    """The engine's current (or last) run, as a client sees it."""

    run_id: str
    run_dir: str = ""
    state: str = "starting"  # the last StateEvent's state
    active: bool = True  # False once the run's thread ended (workers stopped)
    job_toml: str = ""
    step: int = 0
    total_steps: int = 0
    message: str = ""
    resume_from: str = ""
    client: str = ""  # the client that started it


@dataclass(frozen=True)
class RunMark:
    """Where a Watch stream stands; not an engine event.

    "attached": first item of every Watch (``run`` None when the engine never had a run);
    "started": a run began; "history_end": the replay is over, what follows is live;
    "ended": the run's thread ended, ``run.state`` is its end state."""

    change: str
    run: RunInfo | None = None


@dataclass(frozen=True)
class EngineStatus:
    protocol_version: str
    pid: int
    clients: int  # open Watch streams
    run: RunInfo | None
    started_at: float
