"""Distributed AdamW: engine.optim's device AdamW composed with a Group, for every sync mode.

Workers pass the (lazy) gradient of their *token-summed* loss; after the reduction everything
is divided by the global token count, so N workers reproduce one worker on the global batch.
The trainable parameters live as one fp32 master vector on the device (FlatLayout order);
the sum, the global norm, the clip and AdamW run there, compiled (:class:`FlatAdamW`).

- one worker: no collective and no numpy; the step is one lazy graph and one ``mx.eval``.
- ``all-reduce`` / ``ring``: the gradient is cut into buckets; the step evaluates them from
  the last layers to the first (the order the backward pass finishes them) and a comm lane
  reduces each one while the next is computed. Loss sum and token count ride in the last.
- ``reduce-scatter`` (ZeRO-1): the same buckets are reduce-scattered, so each worker gets
  its shard of the sum (AdamW state for that shard only, ~1/N of the memory); it updates the
  shard and an all-gather returns the parameters. The clip uses the true global norm.
- ``parameter-server``: rank 0's process is the server: buckets are pushed to it, it holds
  the only optimizer state, updates and broadcasts the parameters (the pull).
- ``mlx``: MLX's own all-sum on the device buffers (no numpy at all), after the gradients.

Only the wire touches host memory: evaluated buckets are read in place (``np.asarray`` of an
evaluated mx array is a view), in the wire dtype (cast on the device for compression), and
what comes back is copied onto the device once. The global norm is the sum of the squares of
the world's shard pieces (``shard_bounds``), each summed in float32 with one kernel, so every
mode computes the same norm bit for bit (ZeRO-1 gathers the pieces its peers computed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from engine import failpoints
from engine.config import SYNC_MODES, OptimSpec
from engine.dist.bucketing import bucket_ranges, bucket_shards
from engine.dist.compression import check_codec
from engine.dist.group import Group
from engine.dist.overlap import CommLane
from engine.dist.shards import shard_bounds
from engine.optim import is_no_decay_name
from engine.optim.flat_adamw import (
    FlatAdamW,
    piece_sumsq,
    readonly_view,
    sumsq_pieces,
    total_sumsq,
)
from engine.optim.flat_layout import FlatLayout

log = logging.getLogger(__name__)
PS_ROOT = 0  # the parameter server lives in rank 0's process
_WIRE = {"none": mx.float32, "bf16": mx.bfloat16, "fp16": mx.float16}


@dataclass
class StepStats:
    loss_sum: float
    n_tokens: int
    grad_norm: float  # of the token-averaged gradient, before clipping
    comm_s: float  # time in collectives (on the comm lane or the main thread)
    update_s: float
    skipped: bool = False
    comm_exposed_s: float = 0.0  # the part of comm_s the step waited for
    grads_done_at: float = 0.0  # perf_counter() once this rank's gradients were all computed

    @property
    def comm_hidden_s(self) -> float:
        """Collective time that ran while the step computed the next bucket."""
        return max(0.0, self.comm_s - self.comm_exposed_s)


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
        n = self.layout.total
        wire_bytes = 4 if self.codec == "none" else 2
        self.buckets = bucket_ranges(self.layout, bucket_mb * 1024 * 1024, wire_bytes)
        self.lo, self.hi = group.shard_of(n) if mode == "reduce-scatter" else (0, n)
        if mode == "parameter-server" and group.rank != PS_ROOT:
            self.lo = self.hi = 0  # workers hold no optimizer state
        self.pieces = shard_bounds(n, group.size)  # the norm's pieces (see the module doc)
        self.params = self.layout.flatten(params_template)  # fp32 masters, on the device
        mask = None
        if not optim.decay_norms_and_biases:
            mask = self.layout.decay_mask(is_no_decay_name)
        self._decay_mask = mask
        self.previous: dict[str, Any] | None = None  # ZeRO-1's shard before a regroup
        self.fresh = True  # no step taken, no state loaded: its moments are nobody's yet
        self.awaiting_shard = False  # ZeRO-1 regrouped: its shard's moments are not loaded yet
        self.adamw = FlatAdamW(
            self.hi - self.lo,
            betas=(optim.beta1, optim.beta2),
            eps=optim.eps,
            weight_decay=optim.weight_decay,
            grad_clip=optim.grad_clip,
            decay_mask=None if mask is None else mask[self.lo : self.hi],
        )
        mx.eval(self.params)
        self.steps = 0
        self._grads_done_at = 0.0
        self._lane = CommLane() if group.size > 1 and mode != "mlx" else None

    # ---- the step ------------------------------------------------------------------------
    def step(
        self,
        grads_of_sum: Mapping[str, Any],
        loss_sum: Any,
        n_tokens: Any,
        lr: float,
        grad_scale: float = 1.0,
    ) -> tuple[dict[str, Any], StepStats]:
        """Combine every worker's gradients of its token-summed loss and update.

        ``grads_of_sum``, ``loss_sum`` and ``n_tokens`` may be lazy mx arrays (best: the
        step then decides the evaluation order and overlaps the wire with it). The step
        consumes ``grads_of_sum`` (a dict is emptied), so no gradient outlives its bucket.
        ``grad_scale`` is the fp16 loss scale the gradients still carry (divided out here).
        A non-finite global gradient (fp16 overflow) or no target token skips the step on
        every rank alike: each rank sees the same summed gradient and norm. Returns the new parameters
        (shaped like the template; views of the evaluated master vector) and StepStats with
        the global loss sum and token count.
        """
        if not grad_scale > 0:
            raise ValueError(f"grad_scale: expected > 0, got {grad_scale}")
        leaves = self.layout.leaves(grads_of_sum)
        if isinstance(grads_of_sum, dict):
            grads_of_sum.clear()  # consumed: each gradient is freed once its bucket is built
        local = mx.stack([_scalar(loss_sum), _scalar(n_tokens)])
        inv = mx.array(1.0 / float(grad_scale), mx.float32)
        lr_arr = mx.array(float(lr), mx.float32)
        # mx arrays are values: holding the old ones costs no copy, and a step that fails
        # (a peer lost mid-collective) puts them back, so this worker stays at the last
        # completed step and can go on in a regrouped group (engine/runtime/coordinator.py)
        kept = (self.params, self.adamw.state(), self.steps)
        self.steps += 1
        self._grads_done_at = 0.0
        try:
            if self.group.size == 1:
                out = self._step_single(leaves, local, inv, lr_arr)
            elif self.mode == "mlx":
                out = self._step_mlx(leaves, local, inv, lr_arr)
            else:
                out = self._step_wire(leaves, local, inv, lr_arr)
            failpoints.reached("fail-before-commit", self.group.rank, self.group.size, kept[2])
        except BaseException:
            self._drain_lane()
            self._set_params(kept[0])
            self.adamw.restore(kept[1])
            self.steps = kept[2]
            raise
        self.previous = None  # a completed step: a shard kept from before a regroup is stale
        self.fresh = False
        return out

    def _step_single(self, leaves, local, inv, lr):
        flat = self.layout.flatten_range(leaves, 0, self.layout.total)
        leaves.clear()  # the concatenation holds them until it has run
        sumsq = total_sumsq(sumsq_pieces(flat, self.pieces))
        new, norm, ok = self.adamw.update(self.params, flat, sumsq, local[1], inv, lr)
        self._set_params(new)
        mx.eval(self._views, self.adamw.arrays(), norm, ok, local)
        self._grads_done_at = time.perf_counter()  # one eval: gradients and update together
        loss, ntok = local.tolist()
        return self._out(loss, ntok, norm.item(), not ok.item(), 0.0, 0.0, 0.0)

    def _step_mlx(self, leaves, local, inv, lr):
        group = self.group
        parts = [
            self.layout.flatten_range(leaves, a, b, _WIRE[self.codec]) for a, b in self.buckets
        ]
        mx.eval(parts, local)  # the gradients (compute) ...
        t0 = self._grads_done_at = time.perf_counter()
        sums = [group.all_sum_device(p) for p in parts]  # ... then MLX's collective, timed
        meta = group.all_sum_device(local)  # float32 whatever the codec: exact counts
        mx.eval(sums, meta)
        comm_s = time.perf_counter() - t0
        full = (
            mx.concatenate(sums).astype(mx.float32) if len(sums) > 1 else sums[0].astype(mx.float32)
        )
        t1 = time.perf_counter()
        sumsq = total_sumsq(sumsq_pieces(full, self.pieces))
        new, norm, ok = self.adamw.update(self.params, full, sumsq, meta[1], inv, lr)
        self._set_params(new)
        mx.eval(self._views, self.adamw.arrays(), norm, ok)
        loss, ntok = meta.tolist()
        return self._out(loss, ntok, norm.item(), not ok.item(), comm_s, comm_s,
                         time.perf_counter() - t1)  # fmt: skip

    def _step_wire(self, leaves, local, inv, lr):
        """The gRPC groups: buckets evaluated last-first, each reduced on the comm lane."""
        rides = self.codec == "none" and self.mode != "reduce-scatter"
        wire = _WIRE[self.codec]
        futures: dict[int, Any] = {}
        for k in reversed(range(len(self.buckets))):
            a, b = self.buckets[k]
            piece = self.layout.flatten_range(leaves, a, b, wire)
            if k == 0 and rides:  # loss sum and token count ride in the last bucket sent
                piece = mx.concatenate([piece, local])
            mx.eval(piece, local)
            futures[k] = self._lane.submit(self._reduce_bucket, k, piece)
            for i, start in enumerate(self.layout.offsets[:-1]):
                if start >= a:
                    leaves[i] = None  # wholly sent: free it (the lane holds its bucket)
        t_wait = self._grads_done_at = time.perf_counter()
        results = [futures[k].result() for k in range(len(self.buckets))]
        exposed = time.perf_counter() - t_wait
        comm_s = self._lane.reset()
        if self.mode == "reduce-scatter":
            return self._finish_zero(results, local, inv, lr, comm_s, exposed)
        t0 = time.perf_counter()
        meta = None
        if rides and results[0] is not None:
            meta, results[0] = results[0][-2:].astype(np.float64), results[0][:-2]
        elif not rides:
            meta = self._sum_small(np.array(local))
        post = time.perf_counter() - t0
        if self.mode == "parameter-server":
            return self._finish_server(results, meta, inv, lr, comm_s + post, exposed + post)
        full = _to_device(results)
        sumsq = total_sumsq(sumsq_pieces(full, self.pieces))
        t1 = time.perf_counter()
        new, norm, ok = self.adamw.update(self.params, full, sumsq, float(meta[1]), inv, lr)
        self._set_params(new)
        mx.eval(self._views, self.adamw.arrays(), norm, ok)
        return self._out(float(meta[0]), meta[1], norm.item(), not ok.item(), comm_s + post,
                         exposed + post, time.perf_counter() - t1)  # fmt: skip

    def _drain_lane(self) -> None:
        """After a failed step: wait for the collectives still queued on the lane (they fail
        at once on the failed mailbox), so none of them outlives the step and takes a part
        meant for a later group."""
        if self._lane is not None:
            self._lane.drain()
            self._lane.reset()

    def _reduce_bucket(self, k: int, piece: mx.array) -> np.ndarray | None:
        """One bucket's collective (runs on the comm lane)."""
        if self.mode == "reduce-scatter":
            bounds = bucket_shards(self.buckets[k], self.layout.total, self.group.size)
            return self.group.reduce_scatter(piece, bounds)
        if self.mode == "parameter-server":
            return self.group.reduce(piece, PS_ROOT)
        return self.group.all_reduce(piece)

    def _finish_zero(self, results, local, inv, lr, comm_s, exposed):
        shard = _to_device(results)  # this rank's shard of the summed gradient
        mine = piece_sumsq(shard)
        mx.eval(mine)
        t0 = time.perf_counter()
        # loss, tokens and this shard's sum of squares, exactly, from every rank
        rows = self.group.all_gather(
            np.array([*np.array(local).tolist(), mine.item()], np.float32), 3 * self.group.size
        ).reshape(self.group.size, 3)
        comm_s += time.perf_counter() - t0
        exposed += time.perf_counter() - t0
        loss, ntok = rows[:, :2].astype(np.float64).sum(axis=0)
        sumsq = total_sumsq(mx.array(rows[:, 2]))
        t1 = time.perf_counter()
        own = self.params[self.lo : self.hi]
        new, norm, ok = self.adamw.update(own, shard, sumsq, float(ntok), inv, lr)
        mx.eval(new, self.adamw.arrays(), norm, ok)
        update_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        self._set_params(mx.array(self.group.all_gather(new, self.layout.total)))
        mx.eval(self._views)
        gather_s = time.perf_counter() - t2
        return self._out(loss, ntok, norm.item(), not ok.item(), comm_s + gather_s,
                         exposed + gather_s, update_s)  # fmt: skip

    def _finish_server(self, results, meta, inv, lr, comm_s, exposed):
        n, update_s = self.layout.total, 0.0
        if self.group.rank == PS_ROOT:
            full = _to_device(results)
            sumsq = total_sumsq(sumsq_pieces(full, self.pieces))
            t1 = time.perf_counter()
            new, norm, ok = self.adamw.update(self.params, full, sumsq, float(meta[1]), inv, lr)
            info = mx.stack([mx.array(meta[0], mx.float32), mx.array(meta[1], mx.float32),
                             norm, 1.0 - ok.astype(mx.float32)])  # fmt: skip
            out = mx.concatenate([new, info])
            mx.eval(out, self.adamw.arrays())
            update_s = time.perf_counter() - t1
        else:
            out = np.empty(n + 4, np.float32)  # only its size matters off the root
        t2 = time.perf_counter()
        both = self.group.broadcast(out, PS_ROOT)  # the pull
        pull_s = time.perf_counter() - t2
        self._set_params(new if self.group.rank == PS_ROOT else mx.array(both[:n]))
        mx.eval(self._views)
        loss, ntok, norm, skipped = both[n:].astype(np.float64).tolist()
        return self._out(loss, ntok, norm, bool(skipped), comm_s + pull_s, exposed + pull_s,
                         update_s)  # fmt: skip

    def _sum_small(self, values: np.ndarray) -> np.ndarray:
        """Exact sum of a few values over ranks (an all-gather, never compressed)."""
        k = values.size
        rows = self.group.all_gather(values.astype(np.float32), k * self.group.size)
        return rows.reshape(self.group.size, k).astype(np.float64).sum(axis=0)

    def _out(self, loss, ntok, norm, skipped, comm_s, exposed, update_s):
        ntok = int(round(float(ntok)))
        if skipped:
            why = "no target tokens" if ntok <= 0 else "non-finite gradient norm"
            log.warning("update skipped: %s", why)
        stats = StepStats(float(loss), ntok, float(norm), comm_s, update_s, bool(skipped), exposed,
                          self._grads_done_at)  # fmt: skip
        return self._views, stats

    def _set_params(self, new: mx.array) -> None:
        """The new master vector and the views the model takes of it (lazy: evaluated with
        the step, so they cost no eval of their own)."""
        self.params = new
        self._views = self.layout.unflatten(new)

    # ---- regroup ---------------------------------------------------------------------------
    def regroup(self, group: Group) -> None:
        """Go on in ``group`` (the survivors of a lost peer, ranks renumbered), keeping the
        parameters and, outside ZeRO-1, the moments as of the last completed step.

        reduce-scatter: the shard this rank owns changes with the world size, so the moments
        are cut again: the old shard is kept aside (``previous``, reported by
        :meth:`state_dict`) until the rebuilt shard is loaded (the coordinator's PutState)
        or, when peers re-cut their shards from it (a worker joined: Worker.PullState),
        until the next completed step. parameter-server: only the server holds moments, so
        the server must stay rank 0."""
        n = self.layout.total
        server = (self.group.rank == PS_ROOT, group.rank == PS_ROOT)
        if self.mode == "parameter-server" and server[0] != server[1] and not self.fresh:
            raise ValueError(
                "regroup: the parameter server (rank 0) holds the only optimizer state and "
                "must stay rank 0; set the group up again from a snapshot"
            )
        old_group, self.group = self.group, group
        self.pieces = shard_bounds(n, group.size)
        if self.mode == "reduce-scatter":
            if self.fresh:  # set up ahead as a group of one: its moments are nobody's
                self.previous = None
            elif not self.awaiting_shard:  # else a regroup before the re-cut came: what it
                # kept is still the last shard that held real moments (these are zeros)
                m, v = self.adamw.moments_numpy()
                self.previous = {"lo": self.lo, "hi": self.hi, "m": m, "v": v}
            self.lo, self.hi = group.shard_of(n)
            self.adamw = self.adamw.resized(self.hi - self.lo, self._decay_slice())
            self.awaiting_shard = not self.fresh
        elif self.mode == "parameter-server" and server[0] != server[1]:  # fresh: a new role
            self.lo, self.hi = (0, n) if server[1] else (0, 0)
            self.adamw = self.adamw.resized(self.hi - self.lo, self._decay_slice())
        if self._lane is None and group.size > 1 and self.mode != "mlx":
            self._lane = CommLane()
        if old_group is not group:
            old_group.close()

    def _decay_slice(self) -> np.ndarray | None:
        mask = self._decay_mask
        return None if mask is None else mask[self.lo : self.hi]

    # ---- memory and checkpoints -------------------------------------------------------------
    def optimizer_state_bytes(self) -> int:
        """Bytes of AdamW moments this worker holds (ZeRO-1: about 1/N of the full state)."""
        return self.adamw.state_bytes()

    def state_dict(self) -> dict[str, Any]:
        """This worker's part: full parameters, its shard of the moments, and where it lies
        (read-only numpy views of the arrays, no copies: see readonly_view)."""
        m, v = self.adamw.moments_numpy()
        out = {
            "mode": self.mode, "rank": self.group.rank, "size": self.group.size,
            "lo": self.lo, "hi": self.hi, "steps": self.steps, "params": readonly_view(self.params),
            "adam_step": self.adamw.steps_applied, "m": m, "v": v,
        }  # fmt: skip
        if self.previous is not None:  # ZeRO-1 after a regroup: the shard to rebuild from
            p = self.previous
            out.update(prev_lo=p["lo"], prev_hi=p["hi"], prev_m=p["m"], prev_v=p["v"])
        return out

    def state_part(self, params: bool, lo: int, hi: int) -> dict[str, Any]:
        """What a peer takes of this worker's state (a worker joining the group): the
        counters, the parameters if ``params``, and the moments ``[lo, hi)``, from ZeRO-1's
        shard kept from before the last regroup where that holds them (the peers re-cut
        their shards from it), else from the shard held now: read-only views, no copies. Raises
        ValueError naming what is held when neither holds them."""
        out: dict[str, Any] = {"steps": self.steps, "adam_step": self.adamw.steps_applied}
        if params:
            out["params"] = readonly_view(self.params)
        if hi <= lo:
            return out
        held = [] if self.awaiting_shard else [(self.lo, self.hi, self.adamw.m, self.adamw.v)]
        if self.previous is not None:
            p = self.previous
            held.insert(0, (p["lo"], p["hi"], p["m"], p["v"]))
        for start, stop, m, v in held:
            if start <= lo and hi <= stop:
                if m is None or v is None:  # AdamW has not started: its moments are zeros
                    out["m"] = out["v"] = np.zeros(hi - lo, np.float32)
                else:  # views of the moments held, as state_dict's
                    out["m"] = readonly_view(m)[lo - start : hi - start]
                    out["v"] = readonly_view(v)[lo - start : hi - start]
                return out
        ranges = " and, from before its last regroup, ".join(f"[{a}, {b})" for a, b, *_ in held[::-1])
        raise ValueError(f"moments [{lo}, {hi}): not held here (this worker holds "
                         f"{ranges or 'none yet'})")  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any], keep_previous: bool = False) -> None:
        """Restore from :meth:`state_dict` of the same rank in a group of the same size and
        mode. ``keep_previous``: ZeRO-1's shard from before a regroup stays (peers may still
        be re-cutting their own shards from it) until the next completed step."""
        want = {"mode": self.mode, "size": self.group.size, "lo": self.lo, "hi": self.hi}
        for key, value in want.items():
            if state.get(key) != value:
                raise ValueError(
                    f"optimizer state: {key} is {state.get(key)!r}, this worker needs {value!r}"
                )
        params = np.asarray(state["params"], np.float32).reshape(-1)
        if params.size != self.layout.total:
            raise ValueError(
                f"optimizer state: params has {params.size} values, expected {self.layout.total}"
            )
        self.params = mx.array(params)
        self.steps = int(state["steps"])
        self.adamw.load(state.get("m"), state.get("v"), int(state["adam_step"]))
        self.fresh = self.awaiting_shard = False
        if not keep_previous:
            self.previous = None
        mx.eval(self.params, self.adamw.arrays())

    def close(self) -> None:
        if self._lane is not None:
            self._lane.close()


def _scalar(x: Any) -> mx.array:
    return x.astype(mx.float32) if isinstance(x, mx.array) else mx.array(float(x), mx.float32)


def _to_device(parts: list[np.ndarray]) -> mx.array:
    """The received buffers, in order, as one device vector (the one host-to-device copy)."""
    arrays = [mx.array(p) for p in parts if p is not None and p.size]
    if not arrays:
        return mx.zeros((0,), mx.float32)
    return arrays[0] if len(arrays) == 1 else mx.concatenate(arrays)
