"""Plain-data events that leave the engine (to the CLI, the app, the run folder).

The engine never calls Qt. Anything that wants to watch a run passes a callable that
takes one of these dataclasses; the app wraps that callable in a Qt signal queued onto
the GUI thread. Events must be cheap to build and safe to hand to another thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class MetricEvent:
    """One row of metrics: a training step, a validation, or one worker's step.

    ``values`` holds e.g. train_loss, val_loss, learning_rate, grad_norm, tokens_per_s,
    peak_memory_gb, step_time_s, compute_s, comm_s. ``worker`` is None for run-wide rows.
    """

    step: int
    values: dict[str, float]
    kind: str = "train"  # "train" | "val" | "worker"
    worker: int | None = None
    time: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"step": self.step, "kind": self.kind, "time": self.time}
        if self.worker is not None:
            row["worker"] = self.worker
        row.update(self.values)
        return row


@dataclass(frozen=True)
class ProgressEvent:
    step: int
    total_steps: int
    elapsed_s: float
    eta_s: float | None


@dataclass(frozen=True)
class StateEvent:
    """The run's life cycle: preparing, running, checkpointed, finished, failed, stopped."""

    state: str
    message: str = ""
    run_dir: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogEvent:
    level: str  # "info" | "warning" | "error"
    message: str
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class PeerEvent:
    """A worker appeared, changed or went away (from discovery or a manual add)."""

    change: str  # "added" | "updated" | "removed"
    peer: dict[str, Any]


@dataclass(frozen=True)
class DownloadEvent:
    """The coordinator downloading a Hugging Face model into its cache before a run."""

    repo_id: str
    file: str  # the file in flight ("" when finished)
    done_bytes: int  # across the model (files already cached count as done)
    total_bytes: int
    files_done: int
    files_total: int
    finished: bool = False


@dataclass(frozen=True)
class ShipEvent:
    """Files going to one worker before a run: the model (once: workers keep files by hash)
    and the dataset. ``held_bytes`` is what the worker already had and was not sent."""

    worker: str  # address
    rank: int
    sent_bytes: int
    total_bytes: int  # bytes this worker needs sent
    files_sent: int
    files_total: int  # files sent or to send
    held_bytes: int = 0
    file: str = ""  # the file in flight
    rate_bps: float = 0.0  # bytes a second so far, to this worker
    done: bool = False


Event = MetricEvent | ProgressEvent | StateEvent | LogEvent | PeerEvent | DownloadEvent | ShipEvent
EventSink = Callable[[Event], None]


def event_to_dict(event: Event) -> dict[str, Any]:
    return {"type": type(event).__name__, **asdict(event)}


SHOWN = {"shown_as_event": True}  # log extra: a record whose text also goes out as an event
