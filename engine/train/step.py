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

import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_map

log = logging.getLogger(__name__)


class DeviceBatch(NamedTuple):
    """One micro-batch as mx arrays: int32 inputs/targets, float32 weights, all (B, T), and
    int32 record numbers for packed rows (None when nothing is packed)."""

    inputs: mx.array
    targets: mx.array
    weights: mx.array
    segments: mx.array | None = None


def to_device(batch: Any) -> DeviceBatch:
    """Numpy ``Batch(inputs, targets, weights[, segments])`` (engine.data.collate) to mx arrays."""
    if isinstance(batch, DeviceBatch):
        return batch
    inputs, targets, weights = batch.inputs, batch.targets, batch.weights
    segments = getattr(batch, "segments", None)
    return DeviceBatch(
        mx.array(np.asarray(inputs, dtype=np.int32)),
        mx.array(np.asarray(targets, dtype=np.int32)),
        mx.array(np.asarray(weights, dtype=np.float32)),
        None if segments is None else mx.array(np.asarray(segments, dtype=np.int32)),
    )


class _RecordMask:
    """Stands in for mlx-lm's per-layer cache to hand the model one attention mask: mlx-lm
    models ask ``cache.make_mask`` for their mask and read ``offset`` (0: positions start at
    the row's start) and ``update_and_fetch`` (keys and values pass through)."""

    offset = 0

    def __init__(self, mask: mx.array):
        self.mask = mask

    def make_mask(self, *_args: Any, window_size: int | None = None, **_kwargs: Any) -> mx.array:
        if not window_size:
            return self.mask
        # sliding-window layers (Mistral, Gemma) see at most window_size tokens back
        pos = mx.arange(self.mask.shape[-1])
        near = (pos[:, None] - pos[None, :]) < window_size
        return mx.logical_and(self.mask, near)

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        return keys, values


def record_masks(model: nn.Module, segments: mx.array) -> list[_RecordMask]:
    """Per-layer stand-ins carrying a (B, 1, T, T) causal mask that keeps every packed
    record to itself (``segments``: the record number of each position)."""
    t = segments.shape[1]
    pos = mx.arange(t)
    causal = pos[:, None] >= pos[None, :]
    same = segments[:, :, None] == segments[:, None, :]
    mask = mx.logical_and(same, causal)[:, None]
    layers = getattr(model, "layers", None) or getattr(getattr(model, "model", None), "layers", [])
    return [_RecordMask(mask)] * max(1, len(layers))


def model_logits(model: nn.Module, inputs: mx.array, segments: mx.array | None = None) -> mx.array:
    if segments is None:
        return model(inputs)
    return model(inputs, cache=record_masks(model, segments))


def token_loss_sum(
    model: nn.Module,
    inputs: mx.array,
    targets: mx.array,
    weights: mx.array,
    segments: mx.array | None = None,
) -> tuple[mx.array, mx.array]:
    """Cross-entropy summed over target tokens (weight 1), and how many there were."""
    logits = model_logits(model, inputs, segments)
    ce = nn.losses.cross_entropy(logits, targets).astype(mx.float32)
    return (ce * weights).sum(), weights.sum()


def takes_record_masks(model: nn.Module) -> bool:
    """Whether packed records get the logits they would get alone in this model: two short
    records run alone and packed into one row (with :func:`record_masks`) must agree. True
    for mlx-lm's rotary-position models; False where the model ignores the mask or has
    absolute positions (then records are not packed)."""
    a = mx.array([[1, 5, 9, 13, 17, 21]], mx.int32)
    b = mx.array([[1, 4, 8, 15, 16, 23, 42, 7]], mx.int32)
    both = mx.concatenate([a, b], axis=1)
    seg = mx.array([[1] * a.shape[1] + [2] * b.shape[1]], mx.int32)
    training = model.training
    model.eval()
    try:
        alone = mx.concatenate([model(a), model(b)], axis=1).astype(mx.float32)
        packed = model_logits(model, both, seg).astype(mx.float32)
        mx.eval(alone, packed)
    except Exception:  # noqa: BLE001 - a model that cannot take the stand-in cannot pack
        return False
    finally:
        model.train(training)
    scale = float(mx.abs(alone).max().item()) + 1e-6
    worst = float(mx.abs(packed - alone).max().item())
    return worst <= 2e-2 * scale if packed.shape == alone.shape else False


def packing_for(model: nn.Module, requested: bool) -> bool:
    """``data.packing`` where it is safe: only for a model that keeps packed records apart."""
    if not requested:
        return False
    if takes_record_masks(model):
        return True
    log.warning("records are not packed: this model does not keep packed records apart "
                "(it ignores a per-record attention mask or has absolute positions)")  # fmt: skip
    return False


LossFn = Callable[..., tuple[mx.array, mx.array]]


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
        if loss_fn is token_loss_sum:  # the same loss, chunked through the output layer
            from engine.train.chunked_loss import loss_for

            loss_fn = loss_for(model)  # (where the model allows: engine/train/chunked_loss.py)

        def scaled(m: nn.Module, scale: mx.array, *batch: mx.array):
            loss, ntok = loss_fn(m, *batch)
            return loss * scale, loss, ntok

        value_and_grad = nn.value_and_grad(model, scaled)

        def first(scale, *batch):
            (_, loss, ntok), grads = value_and_grad(model, scale, *batch)
            return loss, ntok, tree_map(_as_f32, grads)

        def accumulate(loss_acc, ntok_acc, grads_acc, scale, *batch):
            (_, loss, ntok), grads = value_and_grad(model, scale, *batch)
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
        loss, ntok, grads = self._first(scale, *_arrays(micro_batches[0]))
        for mb in micro_batches[1:]:
            # one micro-batch's activations at a time (the reason to accumulate at all);
            # the last stays lazy, so a caller can evaluate its gradients in any order
            mx.eval(loss, ntok, grads)
            loss, ntok, grads = self._accumulate(loss, ntok, grads, scale, *_arrays(mb))
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
        def fn(*batch):
            return loss_fn(model, *batch)

        self._fn = mx.compile(fn, inputs=[model.state]) if compile else fn

    def __call__(self, batch: Any) -> tuple[mx.array, mx.array]:
        return self._fn(*_arrays(batch))


def _arrays(batch: Any) -> tuple[mx.array, ...]:
    """(inputs, targets, weights[, segments]): the loss function's batch arguments."""
    b = to_device(batch)
    return tuple(b) if b.segments is not None else tuple(b[:3])
