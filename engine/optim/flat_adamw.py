"""AdamW over one flat fp32 vector on the device: normalise, clip, skip and update in one
compiled call, with no host round trip.

Every trainer keeps its trainable parameters as one flat fp32 master vector (or a ZeRO-1
shard of it) and hands :meth:`FlatAdamW.update` the gradient of the *token-summed* loss over
the same range, its sum of squares over the whole vector, the global token count and the
loss scale still in it. The update divides by ``ntok * scale``, clips by the global norm,
and applies :func:`engine.optim.adamw.adamw_update` elementwise in one fused pass (its
per-step scalars compiled apart, so none is recomputed per element). A step
whose norm is not finite (fp16 overflow) or that saw no target token leaves parameters,
moments and the step counter as they were (``mx.where``), so nothing waits on the host to
decide; the caller reads ``ok`` after its one ``mx.eval`` of the step.

:func:`sumsq_pieces` is the norm's one definition: the sum of squares of each of a fixed set
of contiguous pieces, each in float32, then summed in float32 in piece order. A ZeRO-1 worker
holding piece ``r`` computes that piece alone with the same function, the pieces are
gathered exactly, and every sync mode gets a bit-identical norm (and so clip factor).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from engine.optim.adamw import AdamWScalars, adamw_apply, adamw_scalars


def piece_sumsq(x: mx.array) -> mx.array:
    """Sum of squares of one 1-D piece, in float32 (the kernel every mode uses).

    A dot product (BLAS on the CPU) reads the vector once and makes no squared copy, where
    ``sum(square(x))`` would materialise one (a vector's worth of memory)."""
    x = x.reshape(-1).astype(mx.float32)
    if x.size == 0:
        return mx.array(0.0, mx.float32)
    return x @ x


def sumsq_pieces(flat: mx.array, bounds: Sequence[tuple[int, int]]) -> mx.array:
    """A float32 vector: the sum of squares of ``flat[a:b]`` for each ``(a, b)`` in bounds."""
    return mx.stack([piece_sumsq(flat[a:b]) for a, b in bounds])


def total_sumsq(pieces: mx.array) -> mx.array:
    """The pieces summed in order, in float32 (identical wherever the pieces are)."""
    return mx.sum(pieces)


class FlatAdamW:
    """AdamW state (``m``, ``v``, ``step``) for one flat range, updated on the device.

    ``decay_mask`` (0/1 per element, numpy) switches weight decay off for biases and norm
    weights; None or all ones costs no memory (a scalar), as does all zeros.
    """

    def __init__(
        self,
        size: int,
        *,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        grad_clip: float = 1.0,
        decay_mask: np.ndarray | None = None,
    ):
        if grad_clip < 0:
            raise ValueError(f"grad_clip: expected >= 0, got {grad_clip}")
        self.size = int(size)
        self.m: mx.array | None = None
        self.v: mx.array | None = None
        self.step = mx.array(0.0, mx.float32)  # updates applied (skipped ones do not count)
        self.decay = _mask_array(decay_mask, self.size)
        b1, b2 = float(betas[0]), float(betas[1])
        eps, wd, clip = float(eps), float(weight_decay), float(grad_clip)

        def scalars(step, sumsq, ntok, inv_scale, lr):
            factor = inv_scale / mx.maximum(ntok, 1.0)
            norm = mx.sqrt(sumsq) * factor
            ok = mx.logical_and(mx.isfinite(norm), ntok > 0)
            if clip > 0:
                factor = factor * mx.minimum(clip / (norm + 1e-6), 1.0)
            step1 = step + ok.astype(mx.float32)
            s = adamw_scalars(mx.maximum(step1, 1.0), lr, (b1, b2), grad_scale=factor, apply=ok)
            return (step1, norm, ok, *s)

        def vector(param, grad, m, v, decay, ok, *s):
            # one fused elementwise pass over scalars computed apart (AdamWScalars says
            # why): the only vectors made are the three outputs
            return adamw_apply(param, grad, m, v, AdamWScalars(*s), eps, wd, decay, apply=ok)

        self._scalars = mx.compile(scalars)
        self._vector = mx.compile(vector)

    def update(
        self,
        param: mx.array,
        grad: mx.array,
        sumsq: mx.array,
        ntok: mx.array | float,
        inv_scale: mx.array | float,
        lr: mx.array | float,
    ) -> tuple[mx.array, mx.array, mx.array]:
        """``(new_param, norm, ok)``, all lazy; the state advances only where ``ok``.

        ``norm`` is the global norm of the token-averaged, unscaled gradient before clipping.
        """
        if param.size != self.size or grad.size != self.size:
            raise ValueError(
                f"FlatAdamW: expected {self.size} values, got param {param.size}, grad {grad.size}"
            )
        if self.m is None:
            self.m = mx.zeros((self.size,), mx.float32)
            self.v = mx.zeros((self.size,), mx.float32)
        self.step, norm, ok, *s = self._scalars(
            self.step, _f32(sumsq), _f32(ntok), _f32(inv_scale), _f32(lr)
        )
        new, self.m, self.v = self._vector(param, grad, self.m, self.v, self.decay, ok, *s)
        return new, norm, ok

    # ---- state -----------------------------------------------------------------------------
    def arrays(self) -> list[mx.array]:
        """What to evaluate with the step (moments once they exist, and the counter)."""
        return [a for a in (self.m, self.v, self.step) if a is not None]

    @property
    def steps_applied(self) -> int:
        return int(self.step.item())

    def state_bytes(self) -> int:
        return sum(int(a.nbytes) for a in (self.m, self.v) if a is not None)

    def load(self, m: Any, v: Any, step: int) -> None:
        """Restore moments (any array-like of ``size`` values) and the applied-step count;
        ``step == 0`` means AdamW has not started (the moments are then dropped)."""
        self.step = mx.array(float(step), mx.float32)
        if step <= 0:
            self.m = self.v = None
            return
        m_arr, v_arr = mx.array(np.asarray(m, np.float32)), mx.array(np.asarray(v, np.float32))
        if m_arr.size != self.size or v_arr.size != self.size:
            raise ValueError(
                f"optimizer state: moments have {m_arr.size}/{v_arr.size} values, expected {self.size}"
            )
        self.m, self.v = m_arr.reshape(-1), v_arr.reshape(-1)

    def state(self) -> tuple[Any, Any, mx.array]:
        """The moments and counter as they are (mx arrays are values: no copy)."""
        return self.m, self.v, self.step

    def restore(self, state: tuple[Any, Any, mx.array]) -> None:
        """Put back what :meth:`state` returned (a step that failed half-way)."""
        self.m, self.v, self.step = state

    def resized(self, size: int, decay_mask: np.ndarray | None) -> FlatAdamW:
        """A FlatAdamW with the same settings over ``size`` values, its moments not yet
        loaded (zeros) but its applied-step count kept (ZeRO-1 re-cut after a regroup)."""
        out = FlatAdamW.__new__(FlatAdamW)
        out.__dict__.update(self.__dict__)
        out.size, out.m, out.v = int(size), None, None
        out.decay = _mask_array(decay_mask, out.size)
        return out

    def moments_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """``m`` and ``v`` as read-only fp32 numpy views (zeros before the first update).
        No copy: an update makes new arrays, so a view keeps the values it was taken of."""
        if self.m is None or self.v is None:
            return np.zeros(self.size, np.float32), np.zeros(self.size, np.float32)
        return readonly_view(self.m), readonly_view(self.v)


def readonly_view(x: mx.array | np.ndarray) -> np.ndarray:
    """A read-only numpy view of an mx array (evaluated first), without a copy (MLX's
    buffer protocol; 160 MB: 0.1 ms, where np.array copies in 0.36 s on a 2-core VM). The
    view keeps the array alive; MLX arrays are values, so it never changes under it."""
    view = np.asarray(x)
    view.flags.writeable = False
    return view


def _f32(x: mx.array | float) -> mx.array:
    return x.astype(mx.float32) if isinstance(x, mx.array) else mx.array(x, mx.float32)


def _mask_array(mask: np.ndarray | None, size: int) -> mx.array:
    if mask is None:
        return mx.array(1.0, mx.float32)
    mask = np.asarray(mask, np.float32).reshape(-1)
    if mask.size != size:
        raise ValueError(f"decay_mask: expected {size} values, got {mask.size}")
    if mask.size == 0 or np.all(mask == 1.0):
        return mx.array(1.0, mx.float32)
    if np.all(mask == 0.0):
        return mx.array(0.0, mx.float32)
    return mx.array(mask)
