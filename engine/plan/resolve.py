"""``dist.mode = "auto"`` becomes a concrete choice before the group is set up.

The coordinator probes its workers (free memory, matmul rate, RTT, bandwidth: the Probe
call, engine/rpc/probe_client.py), describes the model from its config and safetensors
headers, and plans. The job that comes back names a concrete mode, compression and
accumulation: workers, full-state splits, checkpoints and resumes all see that job.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any

from engine.config import AUTO_MODE, SYNC_MODES, JobSpec, resolve_model_path
from engine.plan.costs import Costs
from engine.plan.inputs import mac_from_probe, workload_from_job
from engine.plan.live import Tracker
from engine.plan.planner import Plan, plan

log = logging.getLogger(__name__)

PROBE_PAYLOAD_MB = 1.0  # enough to see a link's rate past its round trip
PROBE_BENCHMARK_S = 0.25  # a relative speed; every run with auto pays it per worker
FALLBACK_MODE = "all-reduce"


def candidate_modes(local: bool) -> tuple[str, ...]:
    """Local workers share one machine's cores: MLX's ring busy-polls and starved there
    (8-15x slower than gRPC with 3 processes on 2 cores, engine/dist/README.md), so auto
    leaves it to remote Macs, whose own cores it can use."""
    return tuple(m for m in SYNC_MODES if not (local and m == "mlx"))


def concrete(job: JobSpec, mode: str, compression: str, grad_accum: int) -> JobSpec:
    """A copy of ``job`` with these dist and accumulation settings (validated)."""
    dist = dataclasses.replace(job.dist, mode=mode, compression=compression)
    run = dataclasses.replace(job.run, grad_accum=grad_accum)
    out = dataclasses.replace(job, dist=dist, run=run)
    out.validate()
    return out


def probe_all(cluster: Any) -> list[Any]:
    """Probe the workers one after another: probed at once, one worker's matmul benchmark
    took the CPU another's round trips were measured with (local workers share cores)."""
    from engine.rpc.probe_client import probe_worker

    return [probe_worker(c, PROBE_PAYLOAD_MB, PROBE_BENCHMARK_S) for c in cluster.clients]


def plan_for(job: JobSpec, probes: list[tuple[str, Any]], local: bool,
             costs: Costs | None = None) -> Plan:  # fmt: skip
    """The plan for ``job`` on workers described by (name, ProbeResult) pairs."""
    from engine.model import inspect_model

    costs = costs or Costs()
    info = inspect_model(resolve_model_path(job.model.path))
    apple = sys.platform == "darwin"  # the workers of a Mac run are Macs
    macs = [mac_from_probe(name, pr, costs, apple=apple) for name, pr in probes]
    return plan(macs, workload_from_job(job, info), costs, modes=candidate_modes(local))


def resolve_auto(job: JobSpec, cluster: Any) -> tuple[JobSpec, Tracker | None, str]:
    """(the concrete job, a Tracker of its plan or None, a message saying what and why).

    A worker that cannot be probed or a model that cannot be described here falls back to
    all-reduce, and the message says why; a worker without the memory for one sequence is
    refused by name (MemoryError) before anything is set up."""
    if job.dist.mode != AUTO_MODE:
        return job, None, f"dist.mode {job.dist.mode} (set by the job)"
    if cluster.size == 1:
        return concrete(job, FALLBACK_MODE, "none", job.run.grad_accum), None, (
            "dist.mode auto: one worker, nothing to synchronise (all-reduce)")  # fmt: skip
    try:
        results = probe_all(cluster)
        p = plan_for(job, list(zip(cluster.addresses, results, strict=True)), not cluster.remote)
    except Exception as e:  # noqa: BLE001 - planning must never cost the run
        log.warning("dist.mode auto: could not plan (%s): using %s", e, FALLBACK_MODE)
        out = concrete(job, FALLBACK_MODE, job.dist.compression, job.run.grad_accum)
        return out, None, f"dist.mode auto -> {FALLBACK_MODE}: could not plan ({e})"
    if p.refused:  # it would fail its first step: say so by name before anything is set up
        raise MemoryError("; ".join(f"worker {name} cannot take part: {why}" for name, why in p.refused.items())
                          + ". Leave it out, or use a smaller model, QLoRA or a shorter max_seq_len.")  # fmt: skip
    c = p.best.choice
    out = concrete(job, c.mode, c.compression, c.grad_accum)
    msg = (f"dist.mode auto -> {c.mode}, compression {c.compression}, grad_accum "
           f"{c.grad_accum}: {p.reason}. {p.summary()}")  # fmt: skip
    return out, Tracker(p), msg


def plan_details(p: Plan) -> dict[str, Any]:
    """The plan as plain data for events (the app shows it before and during the run)."""
    b = p.best
    return {
        "mode": b.choice.mode, "compression": b.choice.compression,
        "grad_accum": b.choice.grad_accum, "predicted_step_s": b.step_s,
        "predicted_tokens_per_s": b.tokens_per_s, "speedup": b.speedup,
        "efficiency": b.efficiency, "shares": list(b.shares), "reason": p.reason,
        "contributions": dict(p.contributions), "slows": p.slows, "refused": dict(p.refused),
    }  # fmt: skip
