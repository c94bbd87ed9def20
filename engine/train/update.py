"""The optimizer half of a step: normalise by the global token count, clip, AdamW, on the device.

The trainable weights' fp32 *master* copy is one flat vector (engine.optim.FlatLayout) that
:class:`engine.optim.FlatAdamW` updates in one compiled call. ``run.precision`` says what the
model computes in:

- ``"auto"`` (the default): the base model's own dtype. A bf16 base (or a quantized one with
  bf16 scales) computes in bf16, LoRA branch included, with fp32 masters; an fp32 base in
  fp32. Nothing is cast up: that is mlx-lm's choice for the base, and the right one on Apple
  silicon, whose GPU runs bf16 natively and where a 7B base in fp32 would take twice the
  memory. Unlike mlx-lm, the LoRA matmuls run in the base's dtype too: with fp32 LoRA weights
  MLX promotes every adapted layer's input to an fp32 copy that backward keeps (measured:
  see engine/train/README.md), while the fp32 masters keep AdamW's precision.
- ``"fp32"``, ``"bf16"``, ``"fp16"``: every floating weight is cast to that dtype (an fp32
  run of a bf16 base takes twice its memory). fp16 compute uses dynamic loss scaling.

In fp32 the model's trainable weights are views of the master vector: no second copy.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, NamedTuple

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map

from engine.config import JobSpec
from engine.optim import (
    DynamicLossScale,
    FlatAdamW,
    FlatLayout,
    is_no_decay_name,
    make_schedule,
    sumsq_pieces,
    total_sumsq,
)

log = logging.getLogger(__name__)

DTYPES = {"fp32": mx.float32, "bf16": mx.bfloat16, "fp16": mx.float16}
_NAMES = {mx.float32: "fp32", mx.bfloat16: "bf16", mx.float16: "fp16"}


class UpdateResult(NamedTuple):
    grad_norm: mx.array  # lazy scalar (pre-clip norm of the normalised gradient)
    learning_rate: float
    ok: mx.array  # lazy bool: False when the update was skipped (fp16 overflow, no tokens)

    @property
    def skipped(self) -> bool:
        """Reads ``ok`` (evaluates it if the step was not evaluated yet)."""
        return not bool(self.ok.item())


def resolve_precision(model: nn.Module, precision: str) -> str:
    """``fp32``, ``bf16`` or ``fp16``: ``auto`` becomes the base's own dtype (the floating
    dtype holding most frozen parameters; fp32 when the model has none)."""
    if precision != "auto":
        return precision
    trainable = {k for k, _ in tree_flatten(model.trainable_parameters())}
    sizes: Counter = Counter()
    for k, v in tree_flatten(model.parameters()):
        if k not in trainable and v.dtype in _NAMES:
            sizes[_NAMES[v.dtype]] += v.size
    return sizes.most_common(1)[0][0] if sizes else "fp32"


def cast_for_compute(model: nn.Module, precision: str) -> str:
    """Cast the model's floating weights to the compute dtype; returns the resolved name."""
    resolved = resolve_precision(model, precision)
    model.set_dtype(DTYPES[resolved])
    return resolved


def trainable_dtype(precision: str) -> mx.Dtype:
    """The dtype the model's trainable weights compute in, for a resolved precision."""
    return DTYPES[precision]


class Updater:
    """Holds the flat fp32 masters, their AdamW, the schedule and the fp16 loss scale.

    Build it *before* :func:`cast_for_compute` so the masters start from the fp32 values.
    """

    def __init__(self, model: nn.Module, job: JobSpec, total_steps: int, compile: bool = True):
        o = job.optim
        self.model = model
        self.precision = resolve_precision(model, job.run.precision)
        self.dtype = trainable_dtype(self.precision)
        self.schedule = make_schedule(o, total_steps)
        trainable = model.trainable_parameters()
        if not tree_flatten(trainable):
            raise ValueError("train: the model has no trainable parameters (was LoRA applied?)")
        self.layout = FlatLayout(trainable)
        self.master = self.layout.flatten(trainable)
        mask = None if o.decay_norms_and_biases else self.layout.decay_mask(is_no_decay_name)
        self.adamw = FlatAdamW(
            self.layout.total, betas=(o.beta1, o.beta2), eps=o.eps,
            weight_decay=o.weight_decay, grad_clip=o.grad_clip, decay_mask=mask,
        )  # fmt: skip
        # the loss is a token *sum*, so its gradients are ~tokens x those of a mean: start low
        self.loss_scale = DynamicLossScale() if self.precision == "fp16" else None
        self._whole = [(0, self.layout.total)]
        mx.eval(self.master)
        self._put_in_model()

    def _put_in_model(self) -> None:
        """The model's trainable weights from the masters: views, or casts for bf16/fp16."""
        params = self.layout.unflatten(self.master)
        if self.dtype != mx.float32:
            params = tree_map(lambda p: p.astype(self.dtype), params)
        self.model.update(params)

    @property
    def loss_scale_value(self) -> float:
        return self.loss_scale.scale if self.loss_scale else 1.0

    def arrays(self) -> list[Any]:
        """What a step must evaluate: masters, moments and the model's trainable weights."""
        return [self.master, self.adamw.arrays(), self.model.trainable_parameters()]

    def apply_update(self, grads: Any, ntokens: mx.array | float, step: int) -> UpdateResult:
        """Apply update number ``step`` (0-based) with gradients of the *global* token sum.

        Lazy: nothing waits for the device, except in fp16, where the loss scale (host
        state) needs to know at once whether the step overflowed.
        """
        lr = self.schedule(step)
        flat = self.layout.flatten(grads)
        sumsq = total_sumsq(sumsq_pieces(flat, self._whole))
        inv = mx.array(1.0 / self.loss_scale_value, mx.float32)
        ntok = ntokens if isinstance(ntokens, mx.array) else mx.array(ntokens, mx.float32)
        lr_arr = mx.array(lr, mx.float32)
        self.master, norm, ok = self.adamw.update(self.master, flat, sumsq, ntok, inv, lr_arr)
        self._put_in_model()
        result = UpdateResult(norm, lr, ok)
        if self.loss_scale is not None:
            mx.eval(self.arrays(), norm, ok)
            self.loss_scale.update(not result.skipped)
        return result

    # ---- state for checkpoints ---------------------------------------------------------
    def state_arrays(self) -> dict[str, mx.array]:
        """Flat arrays a resume needs: fp32 master weights and AdamW moments, by name."""
        names = self.layout.names
        out = dict(zip((f"param.{k}" for k in names), self.layout.split(self.master), strict=True))
        m, v = self.adamw.m, self.adamw.v
        if m is None or v is None:
            m = v = mx.zeros((self.layout.total,), mx.float32)
        for k, mk, vk in zip(names, self.layout.split(m), self.layout.split(v), strict=True):
            out[f"adam.{k}.m"], out[f"adam.{k}.v"] = mk, vk
        out["adam_step"] = self.adamw.step.astype(mx.uint64)
        return out

    def load_state_arrays(self, arrays: dict[str, mx.array]) -> None:
        """Inverse of :meth:`state_arrays` (also reads checkpoints of the earlier tree form)."""
        params = {k: arrays[f"param.{k}"] for k in self.layout.names}
        self.master = self.layout.flatten(params)
        step = int(arrays["adam_step"].item())
        if step > 0:
            m = self.layout.flatten({k: arrays[f"adam.{k}.m"] for k in self.layout.names})
            v = self.layout.flatten({k: arrays[f"adam.{k}.v"] for k in self.layout.names})
            self.adamw.load(m, v, step)
        else:
            self.adamw.load(None, None, 0)
        mx.eval(self.master, self.adamw.arrays())
        self._put_in_model()
        mx.eval(self.model.parameters())
