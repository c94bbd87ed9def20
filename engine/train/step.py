"""The compiled training step, split at the seam the distributed engine uses.

(a) :class:`GradientStep` sums the loss and its gradients over this worker's
micro-batches (a *token sum*, never a mean), so N workers that all-reduce
``(loss_sum, n_tokens, grads)`` reproduce one worker on the same global batch.
(b) :class:`Updater` (engine/train/update.py) divides by the global token count,
clips, and runs AdamW on the flat fp32 master weights, on the device.

Every micro-batch but the last is evaluated as it is accumulated (one micro-batch of
activations alive at a time); the last is returned lazy, so the distributed step can
evaluate its gradients bucket by bucket, last layers first, and send each while the rest of
the backward pass runs.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_map


class DeviceBatch(NamedTuple):
    """One micro-batch as mx arrays: int32 inputs/targets, float32 weights, all (B, T)."""

    inputs: mx.array
    targets: mx.array
    weights: mx.array


def to_device(batch: Any) -> DeviceBatch:
    """Numpy ``Batch(inputs, targets, weights)`` (from engine.data.collate) to mx arrays."""
    if isinstance(batch, DeviceBatch):
        return batch
    inputs, targets, weights = batch.inputs, batch.targets, batch.weights
    return DeviceBatch(
        mx.array(np.asarray(inputs, dtype=np.int32)),
        mx.array(np.asarray(targets, dtype=np.int32)),
        mx.array(np.asarray(weights, dtype=np.float32)),
    )


def token_loss_sum(
    model: nn.Module, inputs: mx.array, targets: mx.array, weights: mx.array
) -> tuple[mx.array, mx.array]:
    """Cross-entropy summed over target tokens (weight 1), and how many there were."""
    logits = model(inputs)
    ce = nn.losses.cross_entropy(logits, targets).astype(mx.float32)
    return (ce * weights).sum(), weights.sum()


LossFn = Callable[[nn.Module, mx.array, mx.array, mx.array], tuple[mx.array, mx.array]]


def _as_f32(g: mx.array) -> mx.array:
    # accumulate low-precision gradients in fp32 so many micro-batches do not lose bits
    return g if g.dtype == mx.float32 else g.astype(mx.float32)


class GradientStep:
    """``(loss_sum, n_tokens, grads_of_sum)`` over micro-batches, with a compiled inner step.

    The gradients stay local (summed across micro-batches) until the update; ``loss_scale``
    multiplies the loss before backprop (fp16) and is *not* divided out here. Dropout keys
    come from ``mx.random.state``, which the compiled function threads through.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn = token_loss_sum, compile: bool = True):
        self.model = model

        def scaled(m: nn.Module, x: mx.array, y: mx.array, w: mx.array, scale: mx.array):
            loss, ntok = loss_fn(m, x, y, w)
            return loss * scale, loss, ntok

        value_and_grad = nn.value_and_grad(model, scaled)

        def first(x, y, w, scale):
            (_, loss, ntok), grads = value_and_grad(model, x, y, w, scale)
            return loss, ntok, tree_map(_as_f32, grads)

        def accumulate(x, y, w, scale, loss_acc, ntok_acc, grads_acc):
            (_, loss, ntok), grads = value_and_grad(model, x, y, w, scale)
            grads = tree_map(_as_f32, grads)
            return loss_acc + loss, ntok_acc + ntok, tree_map(mx.add, grads_acc, grads)

        if compile:
            # model.state is an output too: nn.value_and_grad leaves the traced parameters
            # in the model, and compile must put the real arrays back
            state = [model.state, mx.random.state]
            first = mx.compile(first, inputs=state, outputs=state)
            accumulate = mx.compile(accumulate, inputs=state, outputs=state)
        self._first = first
        self._accumulate = accumulate

    def __call__(
        self, micro_batches: Sequence[Any], loss_scale: float = 1.0
    ) -> tuple[mx.array, mx.array, Any]:
        if not micro_batches:
            raise ValueError("compute_gradients: expected at least one micro-batch, got none")
        scale = mx.array(loss_scale, mx.float32)
        b = to_device(micro_batches[0])
        loss, ntok, grads = self._first(b.inputs, b.targets, b.weights, scale)
        for mb in micro_batches[1:]:
            # one micro-batch's activations at a time (the reason to accumulate at all);
            # the last stays lazy, so a caller can evaluate its gradients in any order
            mx.eval(loss, ntok, grads)
            b = to_device(mb)
            loss, ntok, grads = self._accumulate(
                b.inputs, b.targets, b.weights, scale, loss, ntok, grads
            )
        return loss, ntok, grads


_STEPS: dict[int, GradientStep] = {}  # by id(model); a Module is a dict, so not hashable


def compute_gradients(
    model: nn.Module, micro_batches: Sequence[Any], loss_scale: float = 1.0
) -> tuple[mx.array, mx.array, Any]:
    """Token-sum loss, token count and gradients of the sum (lazy; nothing is evaluated).

    Uses one cached, compiled :class:`GradientStep` per model.
    """
    step = _STEPS.get(id(model))
    if step is None:
        step = _STEPS[id(model)] = GradientStep(model)
        weakref.finalize(model, _STEPS.pop, id(model), None)
    return step(micro_batches, loss_scale)


class Evaluator:
    """Token-sum loss without gradients (validation), compiled; dropout off via model.eval()."""

    def __init__(self, model: nn.Module, loss_fn: LossFn = token_loss_sum, compile: bool = True):
        def fn(x, y, w):
            return loss_fn(model, x, y, w)

        self._fn = mx.compile(fn, inputs=[model.state]) if compile else fn

    def __call__(self, batch: Any) -> tuple[mx.array, mx.array]:
        b = to_device(batch)
        return self._fn(b.inputs, b.targets, b.weights)
