"""What the planner plans from: each Mac as its probe describes it, and the job's workload."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from engine.plan.costs import Costs


@dataclass(frozen=True)
class Mac:
    """One worker as the planner sees it. ``flops`` is training FLOP/s (the probe's matmul
    rate times Costs.train_efficiency, or a rate corrected from measured steps)."""

    name: str
    flops: float
    free_memory_bytes: int
    bandwidth_bytes_s: float  # this Mac's link, each direction
    rtt_s: float  # round trip from this Mac to the switch and back, as seen by a peer
    apple: bool = True  # Apple silicon converts bf16/fp16 natively; x86 does not
    source: str = "probe"  # where ``flops`` comes from (a probe, measured steps, a paper)

    def with_flops(self, flops: float, source: str) -> Mac:
        return replace(self, flops=flops, source=source)


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
    seq_len: int  # tokens per sequence (the padded length a step computes)
    flops_per_token: float  # forward + backward of one token (LoRA: no base weight grads)
    fixed_bytes: int  # memory per worker before activations (weights, optimizer state)
    bytes_per_sequence: int  # activation memory of one sequence in a micro-batch
    grad_accum: int = 1  # the job's accumulation (auto may raise it to fit memory)
    bucket_bytes: float = 32 * 2**20  # dist.bucket_mb

    @property
    def tokens(self) -> int:
        return self.batch * self.seq_len


def lora_flops_per_token(matmul_params: int, num_layers: int, hidden: int, seq_len: int) -> float:
    """Forward 2P plus backward 2P (activation gradients only: the base is frozen, LoRA's
    own weight gradients are tiny), plus attention's two seq x seq products (QK^T, AV) in
    forward and twice that in backward: 3 x 4 x layers x seq x hidden."""
    return 4.0 * matmul_params + 12.0 * num_layers * seq_len * hidden


def workload_from_job(job: Any, info: Any, memory: Any | None = None) -> Workload:
    """The Workload of a JobSpec on a model described by engine.model.inspect_model.

    ``memory`` is engine.model.estimate_memory(info, job, workers=1) when given (else it is
    computed): its fixed part and its activations per sequence size the micro-batches."""
    from engine.model import estimate_memory

    est = memory or estimate_memory(info, job, workers=1)
    activations = est.breakdown["activations"]
    per_seq = math.ceil(activations / max(1, est.micro_batch))
    embed = info.vocab_size * info.hidden_size
    matmul = info.param_count - (embed if not info.tied_embeddings else 0)  # lm_head stays
    return Workload(
        grad_params=est.trainable_params,
        batch=job.run.batch_size,
        seq_len=job.data.max_seq_len,
        flops_per_token=lora_flops_per_token(
            max(matmul, 1), info.num_layers, info.hidden_size, job.data.max_seq_len
        ),
        fixed_bytes=est.total_bytes - activations,
        bytes_per_sequence=per_seq,
        grad_accum=job.run.grad_accum,
        bucket_bytes=job.dist.bucket_mb * 2**20,
    )
