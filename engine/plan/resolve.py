"""``dist.mode = "auto"`` becomes a concrete choice before the group is set up.

The coordinator probes its workers (free memory, matmul rate, RTT, bandwidth: the Probe
call, engine/rpc/probe_client.py), describes the model from its config and safetensors
headers and the data from its tokenized items (engine/plan/data_shape.py), and plans. The
job that comes back names a concrete mode, compression and accumulation: workers,
full-state splits, checkpoints and resumes all see that job.

Workers on one host (local processes) are one machine: they are probed at once, so each
measures its share of the machine as the run will share it, and the machine is their sum,
split between them again by ``machine_macs``, as the app's plan before Start splits its
one-process probe of this machine (app/plan_view.py): the same machine gets the same plan.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any

from engine.config import AUTO_MODE, SYNC_MODES, JobSpec, resolve_model_path
from engine.plan.costs import Costs
from engine.plan.data_shape import DataShape, shape_for
from engine.plan.inputs import Mac, mac_from_probe, machine_macs, workload_from_job
from engine.plan.live import Tracker
from engine.plan.planner import Plan, plan

log = logging.getLogger(__name__)

PROBE_PAYLOAD_MB = 1.0  # enough to see a link's rate past its round trip
PROBE_BENCHMARK_S = 0.25  # a relative speed; every run with auto pays it per worker
FALLBACK_MODE = "all-reduce"
LOCAL_MACHINE = "this machine"  # the name local processes' machine goes by in a plan


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


def host_of(address: str) -> str:
    """The machine part of a worker's address (as balance.memory_caps groups workers)."""
    return address.rsplit(":", 1)[0]


def probe_all(cluster: Any) -> list[Any]:
    """Probe the machines one after another, and the workers of one machine at once.

    Machines one after another: one machine's matmul benchmark would take the CPU another's
    round trips are measured with. A machine's own workers at once: each then measures the
    share of the machine it gets while the others work too, as during the run (probed alone,
    each local process measured the whole machine, and two processes looked like two Macs)."""
    from concurrent.futures import ThreadPoolExecutor

    from engine.rpc.probe_client import probe_worker

    def one(client: Any) -> Any:
        return probe_worker(client, PROBE_PAYLOAD_MB, PROBE_BENCHMARK_S)

    clients = list(cluster.clients)
    groups: dict[str, list[int]] = {}
    for rank, c in enumerate(clients):
        groups.setdefault(host_of(c.address), []).append(rank)
    out: list[Any] = [None] * len(clients)
    for ranks in groups.values():
        if len(ranks) == 1:
            out[ranks[0]] = one(clients[ranks[0]])
            continue
        with ThreadPoolExecutor(len(ranks)) as pool:
            for rank, result in zip(ranks, pool.map(one, [clients[r] for r in ranks]), strict=True):
                out[rank] = result
    return out


def macs_for(probes: list[tuple[str, Any]], costs: Costs, apple: bool) -> list[Mac]:
    """Macs from (address, ProbeResult) pairs; workers on one host are one machine: its
    compute is their probes' sum (probed at once), its free memory what they saw, and
    ``machine_macs`` shares both out again."""
    by_host: dict[str, list[tuple[str, Any]]] = {}
    for name, pr in probes:
        by_host.setdefault(host_of(name), []).append((name, pr))
    macs: dict[str, Mac] = {}
    for host, group in by_host.items():
        if len(group) == 1:
            name, pr = group[0]
            macs[name] = mac_from_probe(name, pr, costs, apple=apple)
            continue
        local = host in ("127.0.0.1", "localhost", "::1", "[::1]")
        machine = mac_from_probe(LOCAL_MACHINE if local else host, combined(p for _, p in group),
                                 costs, apple=apple)  # fmt: skip
        names = [n for n, _ in group]
        macs.update(zip(names, machine_macs(machine, len(group), names), strict=True))
    return [macs[name] for name, _ in probes]


@dataclasses.dataclass(frozen=True)
class MachineProbe:
    """A machine from its workers' probes taken at once (ProbeResult's fields)."""

    free_memory_bytes: int
    matmul_gflops: float
    rtt_ms: float
    bandwidth_mb_s: float


def combined(probes: Any) -> MachineProbe:
    """One machine from its workers' simultaneous probes: the compute they measured together
    is the sum, the free memory (the same machine's) and the link are their median."""
    import statistics

    ps = list(probes)
    return MachineProbe(
        free_memory_bytes=int(statistics.median(p.free_memory_bytes for p in ps)),
        matmul_gflops=sum(p.matmul_gflops for p in ps),
        rtt_ms=statistics.median(p.rtt_ms for p in ps),
        bandwidth_mb_s=statistics.median(p.bandwidth_mb_s for p in ps),
    )


def plan_for(job: JobSpec, probes: list[tuple[str, Any]], local: bool,
             costs: Costs | None = None, data: DataShape | None = None) -> Plan:  # fmt: skip
    """The plan for ``job`` on workers described by (address, ProbeResult) pairs; ``data``
    is the dataset's step shape (measured here from the job's data when None)."""
    from engine.model import inspect_model

    costs = costs or Costs()
    info = inspect_model(resolve_model_path(job.model.path))
    apple = sys.platform == "darwin"  # the workers of a Mac run are Macs
    macs = macs_for(probes, costs, apple)
    data = data or shape_for(job, len(probes))
    return plan(macs, workload_from_job(job, info, data=data), costs, modes=candidate_modes(local))


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
           f"{c.grad_accum}: {p.reason}. {p.summary()}; {p.work.data_note}")  # fmt: skip
    return out, Tracker(p), msg


def plan_details(p: Plan) -> dict[str, Any]:
    """The plan as plain data for events (the app shows it before and during the run)."""
    b = p.best
    return {
        "mode": b.choice.mode, "compression": b.choice.compression,
        "grad_accum": b.choice.grad_accum, "predicted_step_s": b.step_s,
        "predicted_tokens_per_s": b.tokens_per_s, "speedup": b.speedup,
        "predicted_work_tokens_per_s": b.work_tokens_per_s,
        "efficiency": b.efficiency, "shares": list(b.shares), "reason": p.reason,
        "contributions": dict(p.contributions), "slows": p.slows, "refused": dict(p.refused),
        "machines": len(p.machines), "data": p.work.data_note,
    }  # fmt: skip
