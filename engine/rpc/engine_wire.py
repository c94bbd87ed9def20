"""engine/events.py dataclasses <-> engine.proto messages, and the run marks around them.

Metric values travel as two parallel lists (names, values): cheaper to decode than a map,
and a run's stream is mostly metrics.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, fields
from typing import Any

from engine.events import (
    DownloadEvent,
    Event,
    LogEvent,
    MetricEvent,
    ProgressEvent,
    ShipEvent,
    StateEvent,
)
from engine.rpc.gen import engine_pb2 as pb
from engine.service.info import EngineStatus, RunInfo, RunMark

log = logging.getLogger(__name__)

# The transfer events travel field for field (the proto messages mirror the dataclasses).
DOWNLOAD_FIELDS = tuple(f.name for f in fields(DownloadEvent))
SHIP_FIELDS = tuple(f.name for f in fields(ShipEvent))


def run_to_pb(run: RunInfo) -> pb.RunInfo:
    return pb.RunInfo(
        run_id=run.run_id, run_dir=run.run_dir, state=run.state, active=run.active,
        job_toml=run.job_toml, step=run.step, total_steps=run.total_steps,
        message=run.message, resume_from=run.resume_from, client=run.client,
    )  # fmt: skip


def run_from_pb(m: pb.RunInfo) -> RunInfo:
    return RunInfo(
        m.run_id, m.run_dir, m.state, m.active, m.job_toml, m.step, m.total_steps, m.message,
        m.resume_from, m.client,
    )  # fmt: skip


def status_to_pb(s: EngineStatus) -> pb.EngineStatus:
    msg = pb.EngineStatus(
        protocol_version=s.protocol_version, pid=s.pid, clients=s.clients,
        has_run=s.run is not None, started_at=s.started_at,
    )  # fmt: skip
    if s.run is not None:
        msg.run.CopyFrom(run_to_pb(s.run))
    return msg


def status_from_pb(m: pb.EngineStatus) -> EngineStatus:
    run = run_from_pb(m.run) if m.has_run else None
    return EngineStatus(m.protocol_version, m.pid, m.clients, run, m.started_at)


def mark_to_pb(mark: RunMark) -> pb.EngineEvent:
    msg = pb.RunMark(change=mark.change, has_run=mark.run is not None)
    if mark.run is not None:
        msg.run.CopyFrom(run_to_pb(mark.run))
    return pb.EngineEvent(mark=msg)


def event_to_pb(event: Event | RunMark) -> pb.EngineEvent | None:
    """One message; None for an event the wire does not carry (PeerEvent: the app's own)."""
    t = type(event)
    if t is MetricEvent:
        e: Any = event
        return pb.EngineEvent(
            metric=pb.Metric(
                step=e.step, kind=e.kind, has_worker=e.worker is not None,
                worker=e.worker or 0, time=e.time, names=list(e.values),
                values=[float(v) for v in e.values.values()],
            )
        )  # fmt: skip
    if t is ProgressEvent:
        e = event
        return pb.EngineEvent(
            progress=pb.Progress(
                step=e.step, total_steps=e.total_steps, elapsed_s=e.elapsed_s,
                has_eta=e.eta_s is not None, eta_s=e.eta_s or 0.0,
            )
        )  # fmt: skip
    if t is StateEvent:
        e = event
        return pb.EngineEvent(
            state=pb.State(
                state=e.state, message=e.message, run_dir=e.run_dir,
                detail_json=json.dumps(e.detail, default=str) if e.detail else "",
            )
        )  # fmt: skip
    if t is LogEvent:
        e = event
        return pb.EngineEvent(log=pb.Log(level=e.level, message=e.message, time=e.time))
    if t is RunMark:
        return mark_to_pb(event)  # type: ignore[arg-type]
    if t is DownloadEvent:
        return pb.EngineEvent(download=pb.Download(**asdict(event)))  # type: ignore[call-overload]
    if t is ShipEvent:
        return pb.EngineEvent(ship=pb.Ship(**asdict(event)))  # type: ignore[call-overload]
    return None


def event_from_pb(m: pb.EngineEvent) -> Event | RunMark | None:
    which = m.WhichOneof("kind")
    if which == "metric":
        x = m.metric
        return MetricEvent(
            x.step, dict(zip(x.names, x.values, strict=True)), x.kind,
            x.worker if x.has_worker else None, x.time,
        )  # fmt: skip
    if which == "progress":
        p = m.progress
        return ProgressEvent(p.step, p.total_steps, p.elapsed_s, p.eta_s if p.has_eta else None)
    if which == "state":
        s = m.state
        detail = json.loads(s.detail_json) if s.detail_json else {}
        return StateEvent(s.state, s.message, s.run_dir, detail)
    if which == "log":
        return LogEvent(m.log.level, m.log.message, m.log.time)
    if which == "download":
        return DownloadEvent(**{f: getattr(m.download, f) for f in DOWNLOAD_FIELDS})
    if which == "ship":
        return ShipEvent(**{f: getattr(m.ship, f) for f in SHIP_FIELDS})
    if which == "mark":
        k = m.mark
        return RunMark(k.change, run_from_pb(k.run) if k.has_run else None)
    log.warning("ignoring an engine event of unknown kind %r", which)
    return None
