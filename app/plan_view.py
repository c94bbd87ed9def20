"""What the app shows before Start: the planner's plan (engine/plan) for the chosen Macs.

Plain functions, run on a pool thread (app/plan_preview.py): the Macs the job would use, a
probe of each, then ``engine.plan.plan`` over them, with the data's real widths
(engine/plan/data_shape.py: the preflight's tokenization when it ran in this process).
Local worker processes share one machine's cores and memory: this machine is probed once,
in one process, and ``engine.plan.machine_macs`` splits it between them, as the
coordinator does with its own probes (engine/plan/resolve.py), so the plan compares them
with the machine alone in one process (a second process on a Mac does not add a Mac).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from engine.config import AUTO_MODE, JobSpec, resolve_model_path
from engine.plan import (
    Costs,
    DataShape,
    Plan,
    Prediction,
    mac_from_probe,
    machine_macs,
    plan,
    shape_for,
    workload_from_job,
)
from engine.plan.resolve import candidate_modes

PROBE_BENCHMARK_S = 0.25  # a relative speed, as the coordinator's own probe takes it


@dataclass(frozen=True)
class Target:
    """A machine the job would train on: this one (``local``) or a remote Mac by address."""

    name: str
    address: str  # "local" for this machine
    local: bool = False
    processes: int = 1


def targets_for(job: JobSpec, workers: list[Any]) -> list[Target]:
    """The Macs of the job (app.cluster_model.Worker rows): the ticked remote Macs, or this
    machine with ``dist.workers`` processes when none is ticked (as the coordinator does)."""
    if not job.dist.hosts:
        local = next(w for w in workers if w.local)
        return [Target(local.name, "local", True, job.dist.workers)]
    names = {w.address: w.name for w in workers}
    shown = [names.get(h, h) for h in job.dist.hosts]
    # the plan keys Macs by name: two Macs called alike are told apart by their address
    return [Target(n if shown.count(n) == 1 else f"{n} ({h})", h)
            for n, h in zip(shown, job.dist.hosts, strict=True)]  # fmt: skip


def probe_target(target: Target) -> Any:
    """Measure one machine (a short-lived local worker, or the paired channel); slow."""
    if target.local:
        from app.local_probe import probe_this_machine

        return probe_this_machine(benchmark_s=PROBE_BENCHMARK_S)
    from app.remote_probe import probe_paired_worker

    return probe_paired_worker(target.address, benchmark_s=PROBE_BENCHMARK_S)


@dataclass
class PlanView:
    """The plan for the chosen Macs and what the job's own settings would do with it."""

    plan: Plan | None
    targets: list[Target]
    mode: str  # the job's dist.mode ("auto" or a concrete mode)
    chosen: Prediction | None = None  # the prediction for what the run would use
    local_processes: int = 0  # >0: local processes of this machine, not Macs
    unmeasured: dict[str, str] = field(default_factory=dict)  # name -> why it has no probe
    problem: str = ""  # why there is no plan at all

    @property
    def ratio(self) -> float:
        """Tokens/s of the chosen prediction over the fastest machine alone in one process
        (local processes: this machine alone), as the planner computes its speedup."""
        return self.chosen.speedup if self.chosen is not None else 0.0

    @property
    def slows(self) -> list[str]:
        """Macs (by name) whose leaving out would speed the run up; none for local processes."""
        return [] if self.local_processes or self.plan is None else self.plan.slows


def make_view(job: JobSpec, targets: list[Target], probes: dict[str, Any],
              errors: dict[str, str] | None = None, info: Any = None,
              data: DataShape | None = None) -> PlanView:  # fmt: skip
    """The plan of ``job`` on ``targets``, from ``probes`` (address -> ProbeResult).
    ``errors`` (address -> why) names targets that could not be probed. ``info`` is the
    model's ModelInfo (read from disk when None); ``data`` the dataset's step shape
    (measured from the job's data when None, else max_seq_len with a note). Never raises:
    a problem is in the view."""
    costs = Costs()
    view = PlanView(None, targets, job.dist.mode)
    errors = errors or {}
    view.unmeasured = {t.name: errors[t.address] for t in targets if t.address in errors}
    measured = [t for t in targets if t.address in probes]
    if not measured:
        view.problem = "no machine of this run could be measured" if targets else "no machine"
        return view
    try:
        if info is None:
            from engine.model import inspect_model

            info = inspect_model(resolve_model_path(job.model.path))
        workers = sum(t.processes for t in measured)
        work = workload_from_job(job, info, data=data or shape_for(job, workers))
    except Exception as e:  # noqa: BLE001 - e.g. a Hugging Face id not downloaded yet
        view.problem = f"the model cannot be described here ({e}); the run plans when it starts"
        return view
    apple = sys.platform == "darwin"  # as the coordinator assumes (engine/plan/resolve.py)
    local = measured[0].local
    if local:
        mac = mac_from_probe(measured[0].name, probes["local"], costs, apple=apple)
        macs = machine_macs(mac, measured[0].processes)
        view.local_processes = measured[0].processes
    else:
        macs = [mac_from_probe(t.name, probes[t.address], costs, apple=apple) for t in measured]
    try:
        view.plan = plan(macs, work, costs, modes=candidate_modes(local))
    except ValueError as e:  # not one Mac has the memory for one sequence
        view.problem = str(e)
        return view
    view.chosen = chosen_prediction(view.plan, job)
    return view


def chosen_prediction(p: Plan, job: JobSpec) -> Prediction | None:
    """auto: the plan's pick; a mode set by the job: that mode with the job's compression
    (None when the planner does not consider it here, e.g. mlx for local processes)."""
    if job.dist.mode == AUTO_MODE or len(p.macs) == 1:
        return p.best
    return p.find(job.dist.mode, job.dist.compression)
