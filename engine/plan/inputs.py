"""What the planner plans from: each Mac as its probe describes it, and the job's workload."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from engine.plan.costs import Costs
from engine.plan.data_shape import DataShape


@dataclass(frozen=True)
class Mac:
    """One worker as the planner sees it. ``flops`` is training FLOP/s (the probe's matmul
    rate times Costs.train_efficiency, or a rate corrected from measured steps).

    ``host`` names the machine a worker process runs on when it shares that machine with
    other workers (local processes): its ``flops`` and ``free_memory_bytes`` are then its
    share of the machine's (``machine_macs``), and the machine alone is their sum. Empty: a
    machine of its own."""

    name: str
    flops: float
    free_memory_bytes: int
    bandwidth_bytes_s: float  # this Mac's link, each direction
    rtt_s: float  # round trip from this Mac to the switch and back, as seen by a peer
    apple: bool = True  # Apple silicon converts bf16/fp16 natively; x86 does not
    source: str = "probe"  # where ``flops`` comes from (a probe, measured steps, a paper)
    host: str = ""  # the machine it shares with other workers ("": its own)

    @property
    def machine(self) -> str:
        return self.host or self.name

    def with_flops(self, flops: float, source: str) -> Mac:
        return replace(self, flops=flops, source=source)


def machine_macs(machine: Mac, processes: int, names: list[str] | None = None) -> list[Mac]:
    """``processes`` workers on one machine: each gets an equal share of its compute and
    memory (the cores and the free memory are the machine's, whoever uses them)."""
    names = names or [f"process {i + 1}" for i in range(processes)]
    if len(names) != processes:
        raise ValueError(f"machine_macs: {len(names)} names for {processes} processes")
    if processes == 1 and names[0] == machine.name:
        return [machine]
    return [replace(machine, name=n, flops=machine.flops / processes, host=machine.name,
                    free_memory_bytes=machine.free_memory_bytes // processes) for n in names]  # fmt: skip


def whole_machines(macs: list[Mac]) -> dict[str, Mac]:
    """Each machine of ``macs`` alone, in one process: its workers' compute and memory summed."""
    out: dict[str, Mac] = {}
    for m in macs:
        if m.machine not in out:
            out[m.machine] = replace(m, name=m.machine, host="")
        else:
            first = out[m.machine]
            out[m.machine] = replace(first, flops=first.flops + m.flops,
                                     free_memory_bytes=first.free_memory_bytes + m.free_memory_bytes)  # fmt: skip
    return out


def mac_from_probe(name: str, probe: Any, costs: Costs | None = None, apple: bool = True) -> Mac:
    """A Mac from engine.rpc.probe_client.ProbeResult (or anything with its fields)."""
    costs = costs or Costs()
    return Mac(
        name=name,
        flops=probe.matmul_gflops * 1e9 * costs.train_efficiency,
        free_memory_bytes=int(probe.free_memory_bytes),
        bandwidth_bytes_s=probe.bandwidth_mb_s * 1e6,
        rtt_s=probe.rtt_ms / 1e3,
        apple=apple,
    )


@dataclass(frozen=True)
class Workload:
    """One optimizer step of a job: what every choice must compute and move."""

    grad_params: int  # trainable parameters: the gradient that is synchronised
    batch: int  # sequences in the global batch
    seq_len: float  # padded tokens per sequence a step computes (the data's mean width)
    flops_per_token: float  # forward + backward of one token (LoRA: no base weight grads)
    fixed_bytes: int  # memory per worker before activations (weights, optimizer state)
    bytes_per_sequence: int  # activation memory of one sequence (the widest micro-batch)
    grad_accum: int = 1  # the job's accumulation (auto may raise it to fit memory)
    bucket_bytes: float = 32 * 2**20  # dist.bucket_mb
    trained_per_sequence: float = 0.0  # trained tokens per sequence (0: every position)
    data_note: str = ""  # where seq_len and trained_per_sequence come from

    @property
    def work_tokens(self) -> float:
        """Tokens a step computes, padding included: what compute time follows."""
        return self.batch * self.seq_len

    @property
    def tokens(self) -> float:
        """Trained tokens a step counts: what tokens/s counts (engine/plan/efficiency.py)."""
        return self.batch * (self.trained_per_sequence or self.seq_len)


# How the planner prices a step's compute: tokens x lora_flops_per_token / (the probe's
# matmul rate x Costs.train_efficiency). A step reaches more of the probe's rate the wider
# the model (its matmuls are larger): the work is counted in matmul FLOPs of a model
# REFERENCE_HIDDEN wide, the matmuls weighted by sqrt(REFERENCE_HIDDEN / hidden) (the width
# capped at twice the reference). The attention-score tensor's elementwise work (scale,
# mask, softmax and their backward: memory-bound passes over layers x heads x seq x seq
# values) is SCORE_FLOPS such FLOPs per score. Fitted with Costs.train_efficiency by
# bench/compute_rate.py over real steps of hidden 64-2048, 2-32 heads and seq 128-1024 on
# this project's 2-core VM: within 0.9-1.1x of every shape, where the matmuls alone at one
# efficiency (the earlier model) were up to 20x optimistic for narrow models with many heads
# (the bundled demo model: hidden 64, 8 heads) and 1.3x pessimistic at hidden 2048. Measured
# steps correct the rate per Mac during a run (engine/plan/live.py).
REFERENCE_HIDDEN = 1024
SCORE_FLOPS = 3900.0


def lora_flops_per_token(matmul_params: int, num_layers: int, hidden: int, seq_len: float,
                         heads: int) -> float:  # fmt: skip
    """Training work of one token in reference-width matmul FLOPs (see SCORE_FLOPS).
    Forward 2P plus backward 2P (activation gradients only: the base is frozen, LoRA's own
    weight gradients are tiny); attention's two seq x seq products (QK^T, AV) in forward and
    twice that in backward: 3 x 4 x layers x seq x hidden; both weighted by the model's
    width; then the score tensor's passes, SCORE_FLOPS x layers x heads x seq."""
    width = math.sqrt(min(hidden, 2 * REFERENCE_HIDDEN) / REFERENCE_HIDDEN)
    matmul = 4.0 * matmul_params + 12.0 * num_layers * seq_len * hidden
    return matmul / width + SCORE_FLOPS * num_layers * heads * seq_len


def workload_from_job(job: Any, info: Any, memory: Any | None = None,
                      data: DataShape | None = None) -> Workload:  # fmt: skip
    """The Workload of a JobSpec on a model described by engine.model.inspect_model.

    ``data`` is the dataset's step shape (engine/plan/data_shape.py): compute follows its
    mean padded width, tokens/s its trained tokens, memory its widest micro-batch. Without
    it every sequence is max_seq_len wide and fully trained (``data_note`` says so).
    ``memory`` is engine.model.estimate_memory(info, job at that widest width, workers=1)
    when given (else it is computed): its fixed part and activations size micro-batches."""
    from dataclasses import replace as copy_with

    from engine.model import estimate_memory
    from engine.plan.data_shape import at_max_seq_len

    shape = data or at_max_seq_len(job.data.max_seq_len, "the dataset is not known here")
    widest = min(job.data.max_seq_len, max(1, shape.longest))
    sized = copy_with(job, data=copy_with(job.data, max_seq_len=widest))
    est = memory or estimate_memory(info, sized, workers=1)
    activations = est.breakdown["activations"]
    per_seq = math.ceil(activations / max(1, est.micro_batch))
    embed = info.vocab_size * info.hidden_size
    matmul = info.param_count - (embed if not info.tied_embeddings else 0)  # lm_head stays
    return Workload(
        grad_params=est.trainable_params,
        batch=job.run.batch_size,
        seq_len=shape.width,
        flops_per_token=lora_flops_per_token(
            max(matmul, 1), info.num_layers, info.hidden_size, shape.attention_width, info.num_heads
        ),
        fixed_bytes=est.total_bytes - activations,
        bytes_per_sequence=per_seq,
        grad_accum=job.run.grad_accum,
        bucket_bytes=job.dist.bucket_mb * 2**20,
        trained_per_sequence=shape.trained,
        data_note=shape.note,
    )
