"""Distributed AdamW: engine.optim's AdamW composed with a Group, for every sync mode.

Workers pass the gradient of their *token-summed* loss; after the reduction everything is
divided by the global token count, so N workers reproduce one worker on the global batch.

- ``all-reduce`` / ``ring`` / ``mlx``: sum the gradients (in buckets, with loss sum and token
  count riding in the last one), then every worker steps the full AdamW on identical data.
- ``reduce-scatter`` (ZeRO-1): reduce-scatter the flat gradient; each worker keeps AdamW
  state only for its shard (~1/N of the memory), updates it, and an all-gather returns the
  new parameters. The clip uses the true global norm: shard sums of squares are combined.
- ``parameter-server``: rank 0's process is the server: it holds the only optimizer state,
  receives the pushed gradient sum, updates, and broadcasts the parameters (the pull).

Parameters are held as one fp32 master vector in a :class:`FlatLayout` order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from engine.config import SYNC_MODES, OptimSpec
from engine.dist.bucketing import FlatLayout, reduce_buckets
from engine.dist.compression import check_codec
from engine.dist.group import Group
from engine.optim import AdamW, is_no_decay_name

log = logging.getLogger(__name__)
PS_ROOT = 0  # the parameter server lives in rank 0's process


@dataclass
class StepStats:
    loss_sum: float
    n_tokens: int
    grad_norm: float  # of the token-averaged gradient, before clipping
    comm_s: float
    update_s: float
    skipped: bool = False


class DistributedAdamW:
    """``step(grads_of_sum, loss_sum, n_tokens, lr) -> (new_params, StepStats)``."""

    def __init__(
        self,
        group: Group,
        mode: str,
        optim: OptimSpec,
        params_template: Mapping[str, Any],
        compression: str = "none",
        bucket_mb: float = 32.0,
    ):
        if mode not in SYNC_MODES:
            raise ValueError(f"dist.mode: expected one of {', '.join(SYNC_MODES)}, got {mode!r}")
        self.group, self.mode = group, mode
        self.codec = check_codec(compression)
        self.layout = FlatLayout(params_template)
        self.buckets = self.layout.buckets(bucket_mb * 1024 * 1024)
        self.grad_clip = optim.grad_clip
        self.adamw = AdamW(
            learning_rate=optim.learning_rate,
            betas=(optim.beta1, optim.beta2),
            eps=optim.eps,
            weight_decay=optim.weight_decay,
            decay_norms_and_biases=optim.decay_norms_and_biases,
        )
        self.params = self.layout.flatten(params_template)
        n = self.layout.total
        self.lo, self.hi = group.shard_of(n) if mode == "reduce-scatter" else (0, n)
        if mode == "parameter-server" and group.rank != PS_ROOT:
            self.lo = self.hi = 0  # workers hold no optimizer state
        self._mask = mx.array(self._decay_mask()[self.lo : self.hi])
        self.state: dict[str, Any] = {}
        self.steps = 0
        self._grad_scale = 1.0

    def _decay_mask(self) -> np.ndarray:
        mask = np.ones(self.layout.total, np.float32)
        if not self.adamw.decay_norms_and_biases:
            for name, a, b in zip(
                self.layout.names, self.layout.offsets[:-1], self.layout.offsets[1:], strict=True
            ):
                if is_no_decay_name(name):
                    mask[a:b] = 0.0
        return mask

    # ---- the step ------------------------------------------------------------------------
    def step(
        self,
        grads_of_sum: Mapping[str, Any],
        loss_sum: float,
        n_tokens: int,
        lr: float,
        grad_scale: float = 1.0,
    ) -> tuple[dict[str, Any], StepStats]:
        """Combine every worker's gradients of its token-summed loss and update.

        ``grad_scale`` is the fp16 loss scale the gradients still carry (divided out here).
        A non-finite global gradient (fp16 overflow) skips the step on every rank alike:
        each rank sees the same summed gradient norm. Returns the new parameters (shaped like
        the template) and :class:`StepStats` with the global loss sum and token count.
        """
        if not grad_scale > 0:
            raise ValueError(f"grad_scale: expected > 0, got {grad_scale}")
        self._grad_scale = float(grad_scale)
        flat = self.layout.flatten(grads_of_sum)
        local = np.array([loss_sum, n_tokens], np.float32)
        if self.mode == "reduce-scatter":
            return self._step_zero(flat, local, lr)
        comm = time.perf_counter()
        if self.mode == "parameter-server":
            full = self.group.reduce(
                np.concatenate([flat, local]) if self.codec == "none" else flat, PS_ROOT
            )
        else:
            full, tail = reduce_buckets(
                self.group, flat, self.buckets, local if self.codec == "none" else None
            )
            full = full if tail is None else np.concatenate([full, tail])
        meta = None if self.codec == "none" else self._sum_small(local)
        comm_s = time.perf_counter() - comm
        if self.mode == "parameter-server":
            return self._step_server(full, meta, lr, comm_s)
        grads, meta = (full[:-2], full[-2:]) if meta is None else (full, meta)
        loss, ntok = float(meta[0]), int(round(float(meta[1])))
        t = time.perf_counter()
        norm, skipped = self._update(grads, ntok, None, lr)
        return self._out(loss, ntok, norm, comm_s, time.perf_counter() - t, skipped)

    def _step_zero(self, flat: np.ndarray, local: np.ndarray, lr: float):
        t0 = time.perf_counter()
        shard = self.group.reduce_scatter(flat)
        sq = float(np.dot(shard.astype(np.float64), shard.astype(np.float64)))
        # the wire is float32: send the float64 sum of squares as hi + lo, or the clip (and
        # so the curve) would drift ~1e-7 from the other modes' float64 global norm
        hi = np.float32(sq)
        lo = np.float32(sq - float(hi))
        meta = self._sum_small(np.array([local[0], local[1], hi, lo], np.float32))
        comm_s = time.perf_counter() - t0
        loss, ntok = float(meta[0]), int(round(float(meta[1])))
        sumsq = float(meta[2]) + float(meta[3])
        t = time.perf_counter()
        norm, skipped = self._update(shard, ntok, sumsq, lr)
        update_s = time.perf_counter() - t
        t1 = time.perf_counter()
        self.params = self.group.all_gather(self.params[self.lo : self.hi], self.layout.total)
        comm_s += time.perf_counter() - t1
        return self._out(loss, ntok, norm, comm_s, update_s, skipped)

    def _step_server(
        self, full: np.ndarray | None, meta: np.ndarray | None, lr: float, comm_s: float
    ):
        norm = update_s = 0.0
        skipped = False
        if self.group.rank == PS_ROOT:
            grads, meta2 = (full[:-2], full[-2:]) if meta is None else (full, meta)
            t = time.perf_counter()
            norm, skipped = self._update(grads, int(round(float(meta2[1]))), None, lr)
            update_s = time.perf_counter() - t
            info = np.array([meta2[0], meta2[1], norm, float(skipped)], np.float32)
        else:
            info = np.zeros(4, np.float32)
            self.steps += 1
        t1 = time.perf_counter()
        both = self.group.broadcast(np.concatenate([self.params, info]), PS_ROOT)  # the pull
        comm_s += time.perf_counter() - t1
        self.params, info = both[:-4], both[-4:]
        return self._out(
            float(info[0]),
            int(round(float(info[1]))),
            float(info[2]),
            comm_s,
            update_s,
            bool(info[3]),
        )

    def _update(
        self, grads_sum: np.ndarray, ntok: int, sumsq: float | None, lr: float
    ) -> tuple[float, bool]:
        """AdamW on ``params[lo:hi]``; ``grads_sum`` covers that range. Returns (norm, skipped)."""
        if ntok <= 0:
            log.warning("step with no target tokens: update skipped")
            return 0.0, True
        if sumsq is None:
            g64 = grads_sum.astype(np.float64)
            sumsq = float(np.dot(g64, g64))
        divisor = ntok * self._grad_scale
        norm = float(np.sqrt(sumsq)) / divisor
        if not np.isfinite(norm):
            log.warning("non-finite gradient norm: update skipped")
            return norm, True
        g = mx.array(grads_sum) / divisor
        if self.grad_clip > 0:
            g = g * min(1.0, self.grad_clip / (norm + 1e-6))
        if self.hi > self.lo:
            p = mx.array(self.params[self.lo : self.hi])
            new = self.adamw.update_flat(p, g, self.state, lr, self._mask)
            self.params[self.lo : self.hi] = np.array(new)
        self.steps += 1
        return norm, False

    def _sum_small(self, values: np.ndarray) -> np.ndarray:
        """Exact sum of a few values over ranks (an all-gather, never compressed)."""
        k = values.size
        rows = self.group.all_gather(values.astype(np.float32), k * self.group.size)
        return rows.reshape(self.group.size, k).astype(np.float64).sum(axis=0)

    def _out(self, loss, ntok, norm, comm_s, update_s, skipped):
        return self.layout.unflatten(self.params), StepStats(
            loss, ntok, norm, comm_s, update_s, skipped
        )

    # ---- memory and checkpoints -------------------------------------------------------------
    def optimizer_state_bytes(self) -> int:
        """Bytes of AdamW moments this worker holds (ZeRO-1: about 1/N of the full state)."""
        return sum(int(self.state[k].nbytes) for k in ("m", "v") if k in self.state)

    def state_dict(self) -> dict[str, Any]:
        """This worker's part: full parameters, its shard of the moments, and where it lies."""
        out: dict[str, Any] = {
            "mode": self.mode, "rank": self.group.rank, "size": self.group.size,
            "lo": self.lo, "hi": self.hi, "steps": self.steps, "params": self.params.copy(),
            "adam_step": int(self.state.get("step", 0)),
        }  # fmt: skip
        for k in ("m", "v"):
            out[k] = (
                np.array(self.state[k])
                if k in self.state
                else np.zeros(self.hi - self.lo, np.float32)
            )
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` of the same rank in a group of the same size and mode."""
        want = {"mode": self.mode, "size": self.group.size, "lo": self.lo, "hi": self.hi}
        for key, value in want.items():
            if state.get(key) != value:
                raise ValueError(
                    f"optimizer state: {key} is {state.get(key)!r}, this worker needs {value!r}"
                )
        params = np.asarray(state["params"], np.float32)
        if params.size != self.layout.total:
            raise ValueError(
                f"optimizer state: params has {params.size} values, expected {self.layout.total}"
            )
        self.params = params.copy()
        self.steps = int(state["steps"])
        self.state = {}
        if int(state["adam_step"]) > 0:
            self.state = {
                "m": mx.array(state["m"]),
                "v": mx.array(state["v"]),
                "step": int(state["adam_step"]),
            }
