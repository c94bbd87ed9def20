"""Estimate the memory one worker needs for a LoRA/QLoRA job, before anything is loaded.

bytes = base weights + trainable parameters (fp32 master, compute copy, fp32 gradient, AdamW
m and v in fp32) + the larger of the activations of one micro-batch and the scratch of the
device update (flat gradient and new masters and moments: 16 bytes per trainable parameter;
24 with peers) (+ DoRA's extra, see _dora_bytes). The activation term is a model of what MLX
keeps for backward, per token of a micro-batch (cb = bytes of the compute dtype):

    cb * [layers * (4*hidden + 4*intermediate + 1.5*heads*seq_len) + 4*hidden]
    + vocab * (16 bytes in fp32, 20 in bf16/fp16: logits, fp32 log-softmax and its gradient)

where the trainer makes the whole logits. Where its loss runs through the output layer in
chunks of rows (engine/train/chunked_loss.py: mlx-lm's plain body + frozen head models, not in
fp16), the vocabulary term is one chunk's worth instead, ``rows * vocab * (24 bytes in fp32,
30 in bf16)`` whatever the micro-batch (measured: a 42M-parameter Llama shape, vocabulary
32000, 131-row chunks: about 100 MiB of a step's peak, at 256 and at 1024 tokens; since the
logits' gradient is one fused kernel, a 2-layer model with a 128k vocabulary and 128-row
chunks measures about 28 bytes a logit in bf16 on the CPU, the estimate 1.04x its peak).

where `layers` counts the layers from the lowest adapted one to the top: backward keeps no
activations below the lowest layer that trains (measured: LoRA on the top layer of five
needs about a third of what LoRA on every layer does). The constants (about four saved
copies of each hidden/MLP vector, one and a half of the attention scores) were read off
measured peaks of real steps on MLX 0.32 across hidden, MLP width, vocabulary, heads, layers
and sequence length; tests/model/test_memory.py measures a real step against this estimate.
With gradient checkpointing (run.grad_checkpoint) the layers' term becomes each layer's
input plus one layer recomputed at a time. The attention term assumes a backward pass that
materialises the scores: true of MLX on Metal and on the CPU, whose fused attention has no
fused backward (ScaledDotProductAttentionVJP::use_fallback is true there, MLX 0.30-0.32), so
training runs the unfused composition. MLX's CUDA backend has a cuDNN backward since 0.30,
for bf16/fp16 only, which keeps only the log-sum-exp; there its chunked loss also keeps less
(native bf16 GEMMs: 11-15 bytes a logit for a chunk alone). ``cuda=True`` leaves the scores
out in half precision and counts 22 bytes a bf16 logit (measured on an H100 under Apple's
command-buffer limits, 27 steps of 2-8-layer models at Llama-3.2-1B widths, vocabulary 32k
and 128k, seq 256-1024, rank 8 attention and rank 64 all, bf16 and fp32, with and without
gradient checkpointing: with these terms the estimate is 0.82-1.20x those measured peaks,
recomputed rather than run again, and 22 is fitted on the same steps; the Mac's figures are
the CPU's). It also assumes a trainer that casts the non-quantized base to the
compute dtype (run.precision "auto" keeps the base's own dtype). Allocator caching and
fragmentation come on top.
engine/model/memory_probe.py measures a real step of any job against the estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine.config import JobSpec
from engine.model.inspect import ModelInfo, match_targets

_COMPUTE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# the chunked loss (engine/train/chunked_loss.py): float32 logits per chunk, fewest rows
LOSS_CHUNK_BYTES = 16 * 2**20  # 131 rows of a 32k vocabulary
LOSS_CHUNK_MIN_ROWS = 16
# model types whose logits are head(body(x)), which the trainer's probe finds chunkable
# (engine.train.chunked_loss.takes_chunked_loss); others keep the whole-logits term
CHUNKED_LOSS_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class MemoryEstimate:
    total_bytes: int
    breakdown: dict[str, int]  # name -> bytes, sums to total_bytes
    micro_batch: int  # sequences per micro-batch on one worker
    trainable_params: int
    assumptions: list[str] = field(default_factory=list)

    @property
    def total_gib(self) -> float:
        return self.total_bytes / 2**30

    def format_text(self) -> str:
        lines = [f"memory per worker  {_human(self.total_bytes)} (estimate)"]
        lines += [f"  {name:<18} {_human(n)}" for name, n in self.breakdown.items()]
        lines.append(f"  trainable params   {self.trainable_params:,}")
        lines += [f"  assumes: {a}" for a in self.assumptions]
        return "\n".join(lines)


def _human(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def compute_bytes(info: ModelInfo, job: JobSpec) -> int:
    """Bytes per value of the compute dtype: run.precision's, or for "auto" the base's own
    (engine.train.update.resolve_precision does the same on the loaded model)."""
    if job.run.precision != "auto":
        return _COMPUTE_BYTES[job.run.precision]
    return _DTYPE_BYTES.get(info.dtype, 4)


def runs_on_cuda() -> bool:
    """Whether this process's MLX runs on its CUDA backend (``estimate_memory(cuda=...)``)."""
    import mlx.core as mx

    cuda = getattr(mx, "cuda", None)
    return bool(cuda is not None and cuda.is_available() and mx.default_device() == mx.gpu)


def estimate_memory(
    info: ModelInfo, job: JobSpec, workers: int = 1, cuda: bool = False
) -> MemoryEstimate:
    """Peak bytes per worker for one training step of `job` on the model `info` describes.
    ``cuda``: the step runs on MLX's CUDA backend (:func:`runs_on_cuda` says for this
    process), whose half-precision attention backward keeps no scores and whose chunked
    loss keeps about half of the CPU's bytes a logit (see the module doc). The preflight
    counts a Mac's."""
    cb = compute_bytes(info, job)
    adapted = _adapted_modules(info, job)
    lora_params = sum(job.lora.rank * (m_in + m_out) for m_in, m_out, _ in adapted)
    bias_params = {
        "none": 0,
        "all": info.bias_params,
        "lora_only": sum(m_out for _, m_out, has_bias in adapted if has_bias),
    }[job.lora.bias]
    dora = job.lora.type == "dora"
    magnitudes = sum(m_out for _, m_out, _ in adapted) if dora else 0  # DoRA's trained m
    trainable = lora_params + bias_params + magnitudes
    micro = micro_batch_size(job, workers)
    tokens = micro * job.data.max_seq_len
    per_layer = 4 * info.hidden_size + 4 * info.intermediate_size
    if not (cuda and cb == 2):  # cuDNN's fused backward is for half types only
        per_layer += 1.5 * info.num_heads * job.data.max_seq_len
    lora_acts = sum(job.lora.rank + (m_in if job.lora.dropout > 0 else 0) for m_in, _, _ in adapted)
    in_backward = _layers_in_backward(info, job)
    layers_kept = in_backward
    if job.run.grad_checkpoint:
        # backward keeps each layer's input and recomputes one layer at a time
        kept = in_backward * info.hidden_size + per_layer
        layers_kept = 1
        lora_acts /= max(1, info.num_layers)
    else:
        kept = in_backward * per_layer
    per_token = cb * (kept + 4 * info.hidden_size)
    if chunked_loss(info, job):
        rows = min(tokens, loss_chunk_rows(info.vocab_size, info.hidden_size))
        loss = rows * info.vocab_size * (24 if cb == 4 else 22 if cuda else 30)
    else:
        loss = tokens * info.vocab_size * (16 if cb == 4 else 20)
    activations = int(tokens * (per_token + cb * lora_acts) + loss)
    # the device update runs after backward has freed the activations: it makes the flat
    # fp32 gradient and the new masters, m and v (and, with peers, the received buffers and
    # their device copy); where that outweighs the activations, it sets the peak
    update = trainable * 4 * (4 if workers == 1 else 6)
    breakdown = {
        "base_weights": _base_bytes(info, job, cb),
        "trainable_weights": trainable * 4 + (trainable * cb if cb != 4 else 0),
        "gradients": trainable * 4 * (2 if job.run.grad_accum > 1 else 1),
        "optimizer_state": trainable * 8,
        "activations": activations,
        "update_scratch": max(0, update - activations),
    }
    if dora:
        breakdown["dora"] = _dora_bytes(info, job, adapted, tokens, cb, layers_kept)
    assumptions = [
        f"micro-batch of {micro} sequences x {job.data.max_seq_len} tokens "
        f"(batch {job.run.batch_size} / {workers} workers / {job.run.grad_accum} accumulation)",
        f"compute dtype {job.run.precision if job.run.precision != 'auto' else info.dtype} "
        "(run.precision); trainable weights have an fp32 master copy",
        (
            "gradient checkpointing: each layer's input is kept, one layer is recomputed at a time"
            if job.run.grad_checkpoint
            else "no gradient checkpointing; a fused attention backward (CUDA) keeps no scores"
            if cuda and cb == 2
            else "no gradient checkpointing; attention scores are kept for backward"
        ),
    ]
    if job.model.quantize and not info.quantization:
        assumptions.append(
            f"{job.model.bits}-bit base, group {job.model.group_size}; layers whose input "
            "dimension does not divide the group stay in full precision"
        )
    return MemoryEstimate(sum(breakdown.values()), breakdown, micro, trainable, assumptions)


def loss_chunk_rows(vocab: int, hidden: int, chunk_bytes: int = LOSS_CHUNK_BYTES) -> int:
    """Rows a chunk of the chunked loss: ``chunk_bytes`` of float32 logits, but at least
    hidden / 4, since every chunk reads the whole output layer again (BLAS packs it anew for
    each call: 32-row chunks made a 58M-parameter model's step 10% slower than 131-row ones
    on a CPU)."""
    return max(LOSS_CHUNK_MIN_ROWS, chunk_bytes // (4 * max(1, vocab)), hidden // 4)


def chunked_loss(info: ModelInfo, job: JobSpec) -> bool:
    """Whether the trainer's loss will run through the output layer in chunks: a model type
    known to be a plain body + head, an output layer LoRA leaves frozen, no fp16 compute."""
    fp16 = (job.run.precision == "fp16") or (
        job.run.precision == "auto" and info.dtype == "float16"
    )
    head_trained = any("lm_head" in t or "embed_tokens" in t for t in job.lora.target_modules)
    return info.model_type in CHUNKED_LOSS_TYPES and not fp16 and not head_trained


def _dora_bytes(info: ModelInfo, job: JobSpec, adapted: list[tuple[int, int, bool]],
                tokens: int, cb: int, layers_kept: int) -> int:  # fmt: skip
    """What mlx-lm's DoRALinear keeps beyond LoRA: each adapted module's output before it is
    rescaled (for m's gradient), and weight-sized arrays: on a quantized base the dequantized
    weight of every adapted module stays alive for the backward pass (checkpointing or not:
    it depends on no input of the checkpointed layer, so MLX keeps it rather than recompute
    it; measured); on a float base only the transient W + scale * B A of one module."""
    share = layers_kept / max(1, info.num_layers)  # checkpointing keeps one layer's worth
    outputs = tokens * cb * sum(m_out for _, m_out, _ in adapted) * share
    quantized = bool(info.quantization) or job.model.quantize
    if quantized:
        weights = cb * sum(m_in * m_out for m_in, m_out, _ in adapted)
    else:
        weights = 2 * 4 * max((m_in * m_out for m_in, m_out, _ in adapted), default=0)
    return int(outputs + weights)


def micro_batch_size(job: JobSpec, workers: int = 1) -> int:
    """Sequences in one worker's micro-batch: the global batch over workers and accumulation."""
    return max(1, math.ceil(job.run.batch_size / max(1, workers) / job.run.grad_accum))


def _adapted_modules(info: ModelInfo, job: JobSpec) -> list[tuple[int, int, bool]]:
    """(in, out, has_bias) of each adapted module across the chosen layers."""
    matches = match_targets(info.module_names, job.lora.target_modules)
    names = {n for hits in matches.values() for n in hits}
    per_layer = [
        (m.in_features, m.out_features, m.has_bias) for m in info.linear_modules if m.name in names
    ]
    n_layers = len(set(job.lora.layers)) if job.lora.layers else info.num_layers
    return per_layer * n_layers


def _layers_in_backward(info: ModelInfo, job: JobSpec) -> int:
    """Layers whose activations backward keeps: from the lowest adapted layer to the top
    (nothing below it has a gradient, so MLX frees those activations as it goes)."""
    if not job.lora.layers:
        return info.num_layers
    return max(1, info.num_layers - max(0, min(min(job.lora.layers), info.num_layers - 1)))


def _base_bytes(info: ModelInfo, job: JobSpec, cb: int) -> int:
    """Weights as held in memory: stored quantized, quantized at load (QLoRA), or cast to cb."""
    if info.quantization:
        return info.weight_bytes
    if not job.model.quantize:
        return info.param_count * cb
    bits, group = job.model.bits, job.model.group_size
    total = 0
    for name, t in info.tensors.items():
        if name.endswith(".weight") and len(t.shape) == 2 and t.shape[1] % group == 0:
            out_dim, in_dim = t.shape
            # packed weight + a scale and a bias per group (mlx affine quantization)
            total += out_dim * in_dim * bits // 8 + 2 * out_dim * (in_dim // group) * cb
        else:
            total += t.size * cb
    return total
