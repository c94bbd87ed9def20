"""Predict every sync choice for these Macs and this job, and pick the fastest.

A step is: each Mac computes its share of the global batch (shares follow speed, so they
finish together), then the gradients are synchronised (engine/plan/comm.py), then AdamW
updates. Predicted step time = slowest compute + sync + update. Compute follows the padded
tokens a step really computes (the data's widths, engine/plan/data_shape.py); tokens/s
counts trained tokens (engine/plan/efficiency.py). Worker processes that share a machine
(``Mac.host``) share its compute and memory: the speedup is over the fastest *machine*
alone in one process, and the scaling efficiency is tokens/s over the sum of every
machine's tokens/s alone (the ideal of perfect balance and free communication), so local
processes of one machine never show a speedup they do not have. A machine whose removal
makes the best plan faster has a negative contribution: it would slow the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine.plan.comm import sync_time, update_time
from engine.plan.costs import Costs
from engine.plan.efficiency import scaling_efficiency
from engine.plan.inputs import Mac, Workload, whole_machines
from engine.plan.shares import shares_for

ALL_MODES = ("all-reduce", "reduce-scatter", "parameter-server", "ring", "mlx")
COMPRESSIONS = ("none", "bf16", "fp16")


@dataclass(frozen=True)
class Choice:
    mode: str
    compression: str
    grad_accum: int


@dataclass(frozen=True)
class Prediction:
    choice: Choice
    step_s: float
    compute_s: float
    sync_s: float
    update_s: float
    tokens_per_s: float  # trained tokens (engine/plan/efficiency.py)
    speedup: float  # over the fastest machine alone, in one process
    efficiency: float  # over the sum of every machine alone (at most 1)
    shares: tuple[int, ...]  # sequences of the global batch per Mac, in Mac order
    work_tokens_per_s: float = 0.0  # tokens computed, padding included


@dataclass
class Plan:
    macs: list[Mac]
    work: Workload
    predictions: list[Prediction]  # fastest first
    best: Prediction
    reason: str
    alone_tokens_per_s: dict[str, float]  # by machine (Mac.machine): it alone, one process
    contributions: dict[str, float] = field(default_factory=dict)  # tokens/s each machine adds
    refused: dict[str, str] = field(default_factory=dict)  # Mac -> why it cannot take part
    slows: list[str] = field(default_factory=list)  # machines to leave out, most harmful first

    @property
    def machines(self) -> list[str]:
        """The machines of the plan, in Mac order (local processes share one)."""
        return list(dict.fromkeys(m.machine for m in self.macs))

    def find(self, mode: str, compression: str = "none") -> Prediction | None:
        """The fastest prediction for this mode and compression (any accumulation)."""
        hits = [
            p
            for p in self.predictions
            if (p.choice.mode, p.choice.compression) == (mode, compression)
        ]
        return hits[0] if hits else None

    def summary(self) -> str:
        b = self.best
        machines = self.machines
        if len(machines) == 1 and len(self.macs) > 1:
            who = (f"{len(self.macs)} processes sharing {machines[0]}: {b.tokens_per_s:,.0f} "
                   f"tokens/s, {b.speedup:.2f}x {machines[0]} alone in one process")  # fmt: skip
        else:
            who = (f"these {len(machines)} Macs ({', '.join(machines)}): {b.tokens_per_s:,.0f} "
                   f"tokens/s, {b.speedup:.2f}x the fastest alone ({b.efficiency:.0%} of ideal)")  # fmt: skip
        text = (f"{who}, {b.choice.mode} with {b.choice.compression} compression, "
                f"grad_accum {b.choice.grad_accum}")  # fmt: skip
        for name in self.slows:
            text += f"; {name} would slow the run ({self.contributions[name]:+,.0f} tokens/s)"
        for name, why in self.refused.items():
            text += f"; {name} left out: {why}"
        return text


def split_by_speed(batch: int, flops: list[float]) -> list[int]:
    """Sequences per Mac by speed, as the run splits them (engine/plan/shares.py: the split
    that finishes first; sums to ``batch``)."""
    return shares_for(batch, flops)


def _fits(mac: Mac, work: Workload, sequences: int, accum: int) -> bool:
    micro = math.ceil(sequences / accum) if sequences else 0
    return work.fixed_bytes + micro * work.bytes_per_sequence <= mac.free_memory_bytes


def _needed_accum(macs: list[Mac], work: Workload, shares: list[int]) -> int:
    need = 1
    for mac, n in zip(macs, shares, strict=True):
        room = (mac.free_memory_bytes - work.fixed_bytes) // max(1, work.bytes_per_sequence)
        if n:
            need = max(need, math.ceil(n / max(1, room)))
    return need


def _compute_s(mac: Mac, work: Workload, sequences: int, accum: int, costs: Costs) -> float:
    if sequences == 0:
        return 0.0
    micro = min(accum, sequences)
    return sequences * work.seq_len * work.flops_per_token / mac.flops + micro * costs.micro_batch_s


def alone_tokens_per_s(mac: Mac, work: Workload, costs: Costs) -> float:
    """One machine training the whole batch by itself, in one process (the accumulation its
    memory needs); ``mac`` is the whole machine (engine.plan.inputs.whole_machines)."""
    accum = max(work.grad_accum, _needed_accum([mac], work, [work.batch]))
    step = _compute_s(mac, work, work.batch, accum, costs) + update_time(
        "all-reduce", 1, work, costs
    )
    return work.tokens / step


def plan(
    macs: list[Mac],
    work: Workload,
    costs: Costs | None = None,
    modes: tuple[str, ...] = ALL_MODES,
    compressions: tuple[str, ...] = COMPRESSIONS,
    contributions: bool = True,
) -> Plan:
    """Every (mode, compression, accumulation) for ``macs``, fastest first, and the pick."""
    costs = costs or Costs()
    refused = {m.name: _too_small(m, work) for m in macs if not _fits(m, work, 1, 1)}
    usable = [m for m in macs if m.name not in refused]
    if not usable:
        raise ValueError("no Mac has the memory for even one sequence: " +
                         "; ".join(f"{k}: {v}" for k, v in refused.items()))  # fmt: skip
    alone = {name: alone_tokens_per_s(m, work, costs) for name, m in whole_machines(usable).items()}
    shares = split_by_speed(work.batch, [m.flops for m in usable])
    need = _needed_accum(usable, work, shares)
    accums = sorted({max(work.grad_accum, need), need})
    preds = []
    for mode in modes if len(usable) > 1 else ("all-reduce",):
        for codec in compressions if len(usable) > 1 else ("none",):
            for accum in accums:
                preds.append(
                    predict(Choice(mode, codec, accum), usable, work, shares, alone, costs)
                )
    preds.sort(key=lambda p: p.step_s)
    best, reason = pick(preds, costs)
    out = Plan(usable, work, preds, best, reason, alone, refused=refused)
    if contributions:
        out.contributions = _contributions(out, work, costs, modes, compressions)
        if any(gain < 0 for gain in out.contributions.values()):
            out.slows = _slows(usable, work, costs, modes, compressions)
    return out


def predict(choice: Choice, macs: list[Mac], work: Workload, shares: list[int],
            alone: dict[str, float], costs: Costs) -> Prediction:  # fmt: skip
    """One choice's step: slowest compute of its share + synchronisation + update."""
    n = len(macs)
    compute = max(
        _compute_s(m, work, s, choice.grad_accum, costs) for m, s in zip(macs, shares, strict=True)
    )
    sync = sync_time(choice.mode, choice.compression, macs, work, costs).seconds
    update = update_time(choice.mode, n, work, costs)
    step = compute + sync + update
    tps = work.tokens / step
    return Prediction(choice, step, compute, sync, update, tps, tps / max(alone.values()),
                      scaling_efficiency(tps, alone.values()), tuple(shares),
                      work.work_tokens / step)  # fmt: skip


def pick(preds: list[Prediction], costs: Costs) -> tuple[Prediction, str]:
    """The fastest exact choice, unless lossy compression is Costs.compression_min_gain faster.
    ``preds`` sorted fastest first. Returns the pick and why."""
    exact = [p for p in preds if p.choice.compression == "none"]
    best = exact[0] if exact else preds[0]
    runner = next((p for p in exact[1:] if p.choice.mode != best.choice.mode), None)
    why = f"{best.choice.mode}: predicted {best.step_s:.3f}s a step"
    if runner is not None:
        why += f" (next: {runner.choice.mode} {runner.step_s:.3f}s)"
    lossy = preds[0]
    if (
        lossy.choice.compression != "none"
        and lossy.step_s < (1 - costs.compression_min_gain) * best.step_s
    ):
        return lossy, (f"{lossy.choice.mode} with {lossy.choice.compression} gradients: predicted "
                       f"{lossy.step_s:.3f}s a step against {best.step_s:.3f}s exact "
                       f"({best.choice.mode}); the link, not compute, bounds this run")  # fmt: skip
    if lossy.choice.compression != "none":
        why += f"; {lossy.choice.compression} would gain under {costs.compression_min_gain:.0%}: kept exact"
    return best, why


def _contributions(full: Plan, work: Workload, costs: Costs, modes: tuple[str, ...],
                   compressions: tuple[str, ...]) -> dict[str, float]:  # fmt: skip
    machines = full.machines
    if len(machines) == 1:
        return {machines[0]: full.best.tokens_per_s}
    out = {}
    for machine in machines:
        rest = [m for m in full.macs if m.machine != machine]
        without = plan(rest, work, costs, modes, compressions, contributions=False)
        out[machine] = full.best.tokens_per_s - without.best.tokens_per_s
    return out


def _too_small(mac: Mac, work: Workload) -> str:
    need = work.fixed_bytes + work.bytes_per_sequence
    return (f"{mac.free_memory_bytes / 2**30:.1f} GiB free, one sequence needs "
            f"{need / 2**30:.1f} GiB (weights, optimizer state and one sequence's activations)")  # fmt: skip


def _slows(macs: list[Mac], work: Workload, costs: Costs, modes: tuple[str, ...],
           compressions: tuple[str, ...]) -> list[str]:  # fmt: skip
    """Machines whose removal makes the run faster: the most harmful first, each judged with
    the ones before it already out (one Mac's slow link can make another look harmful too)."""
    out, kept = [], list(macs)
    while len({m.machine for m in kept}) > 1:
        base = plan(kept, work, costs, modes, compressions, contributions=False).best
        faster = {
            name: plan([k for k in kept if k.machine != name], work, costs, modes, compressions,
                       contributions=False).best.tokens_per_s - base.tokens_per_s
            for name in dict.fromkeys(m.machine for m in kept)
        }  # fmt: skip
        worst = max(faster, key=lambda name: faster[name])
        if faster[worst] <= 0:
            break
        out.append(worst)
        kept = [m for m in kept if m.machine != worst]
    return out
