"""The run's resumable state in a form that does not depend on the worker count or mode.

Workers report their part (full fp32 parameters, their slice of the AdamW moments, where it
lies); :func:`gather` joins the parts into one :class:`FullState` (full ``m``/``v``), and
:func:`split` cuts it again for any number of workers in any sync mode. That is what lets a
run re-form its group after losing a worker and resume a checkpoint on a different cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np

from engine.dist.shards import shard_range

WorkerState = tuple[dict[str, Any], dict[str, np.ndarray]]


@dataclass
class FullState:
    step: int  # training steps done
    params: np.ndarray  # fp32 master vector (DistributedAdamW's FlatLayout order)
    m: np.ndarray
    v: np.ndarray
    adam_step: int  # AdamW's bias-correction counter (0: moments not started)
    opt_steps: int  # DistributedAdamW.steps
    loss_scale: dict[str, Any] | None = None  # fp16 DynamicLossScale state
    extra: dict[str, Any] = field(default_factory=dict)


def moment_range(mode: str, rank: int, world: int, n: int) -> tuple[int, int]:
    """The slice of the moments ``rank`` holds (as DistributedAdamW lays them out)."""
    if mode == "reduce-scatter":
        return shard_range(n, world, rank)
    if mode == "parameter-server" and rank != 0:
        return 0, 0  # the server (rank 0) holds the only optimizer state
    return 0, n


def gather(states: list[WorkerState]) -> FullState:
    """Join every rank's part; each rank's moment slice goes where its ``lo``/``hi`` say."""
    if not states:
        raise ValueError("gather: no worker states")
    meta0, t0 = states[0]
    # the result takes the states' arrays where it can (callers hand over states they drop):
    # a one-worker state of 46M parameters is 550 MB, and each copy of it costs a step's time
    params = np.asarray(t0["params"], np.float32)
    n = params.size
    whole = {}  # moments one rank holds whole, taken as they are
    for rank, (meta, tensors) in enumerate(states):
        lo, hi = int(meta["lo"]), int(meta["hi"])
        for name in ("m", "v"):
            part = np.asarray(tensors[name], np.float32)
            if part.size != hi - lo:
                raise ValueError(
                    f"rank {rank}: {name} has {part.size} values, its range is [{lo}, {hi})"
                )
            if (lo, hi) == (0, n) and name not in whole:
                whole[name] = part.reshape(n)
    m = whole.get("m")
    v = whole.get("v")
    if m is None or v is None:
        m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
        for meta, tensors in states:
            lo, hi = int(meta["lo"]), int(meta["hi"])
            m[lo:hi] = np.asarray(tensors["m"], np.float32)
            v[lo:hi] = np.asarray(tensors["v"], np.float32)
    return FullState(
        step=int(meta0.get("step", 0)), params=params, m=m, v=v,
        adam_step=max(int(meta.get("adam_step", 0)) for meta, _ in states),
        opt_steps=int(meta0.get("steps", 0)), loss_scale=meta0.get("loss_scale"),
    )  # fmt: skip


def from_survivors(states: list[WorkerState], snapshot: FullState) -> tuple[FullState, int]:
    """The group's state from the workers still in it, all of one step, and ``snapshot``
    for what none of them holds: their parameters, and each one's moments: ZeRO-1's shard
    from before a regroup where it kept one (``prev_m``/``prev_v`` over ``[prev_lo,
    prev_hi)``), else the ones it holds (``m``/``v`` over ``[lo, hi)``). After a loss the
    lost shards come from the snapshot (an older step, unless it is the current one).
    Returns the state and how many moment values came from the snapshot."""
    if not states:
        raise ValueError("from_survivors: no worker states")
    meta0, t0 = states[0]
    params = np.asarray(t0["params"], np.float32).copy()
    if params.size != snapshot.params.size:
        raise ValueError(f"from_survivors: {params.size} parameters, the snapshot has "
                         f"{snapshot.params.size}")  # fmt: skip
    m, v = snapshot.m.copy(), snapshot.v.copy()
    kept = np.zeros(params.size, bool)
    for rank, (meta, tensors) in enumerate(states):
        pre = "prev_" if "prev_lo" in meta else ""
        lo, hi = int(meta[f"{pre}lo"]), int(meta[f"{pre}hi"])
        for name, dst in ((f"{pre}m", m), (f"{pre}v", v)):
            part = np.asarray(tensors[name], np.float32)
            if part.size != hi - lo:
                raise ValueError(f"rank {rank}: {name} has {part.size} values, its range is "
                                 f"[{lo}, {hi})")  # fmt: skip
            dst[lo:hi] = part
        kept[lo:hi] = True
    full = FullState(
        step=int(meta0.get("step", 0)), params=params, m=m, v=v,
        adam_step=max(int(meta.get("adam_step", 0)) for meta, _ in states),
        opt_steps=int(meta0.get("steps", 0)), loss_scale=meta0.get("loss_scale"),
    )  # fmt: skip
    return full, int((~kept).sum())


def split(full: FullState, mode: str, world: int) -> list[WorkerState]:
    """Per-rank PutState payloads for ``world`` workers in ``mode``."""
    n = full.params.size
    out: list[WorkerState] = []
    for rank in range(world):
        lo, hi = moment_range(mode, rank, world, n)
        meta: dict[str, Any] = {
            "mode": mode, "rank": rank, "size": world, "world": world, "lo": lo, "hi": hi,
            "steps": full.opt_steps, "adam_step": full.adam_step, "step": full.step,
        }  # fmt: skip
        if full.loss_scale is not None:
            meta["loss_scale"] = full.loss_scale
        tensors = {"params": full.params, "m": full.m[lo:hi].copy(), "v": full.v[lo:hi].copy()}
        out.append((meta, tensors))
    return out


def to_checkpoint(full: FullState) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays (the state's own, no copies) and meta for engine.train.save_checkpoint (no
    rank or world inside)."""
    arrays = {"params": full.params, "m": full.m, "v": full.v}
    meta = {"adam_step": full.adam_step, "opt_steps": full.opt_steps, "loss_scale": full.loss_scale}
    return arrays, meta


def from_checkpoint(arrays: dict[str, mx.array], meta: dict[str, Any], step: int) -> FullState:
    """A FullState from a checkpoint; also reads the older per-rank layout (``rank<r>.m``)."""
    if "m" in arrays:
        return FullState(
            step=step, params=np.array(arrays["params"], np.float32),
            m=np.array(arrays["m"], np.float32), v=np.array(arrays["v"], np.float32),
            adam_step=int(meta.get("adam_step", 0)), opt_steps=int(meta.get("opt_steps", step)),
            loss_scale=meta.get("loss_scale"),
        )  # fmt: skip
    if "workers" not in meta:
        raise ValueError("checkpoint: neither full moments ('m', 'v') nor per-worker parts")
    params = np.array(arrays["params"], np.float32)
    states = []
    for rank, wmeta in enumerate(meta["workers"]):
        prefix = f"rank{rank}."
        tensors = {k[len(prefix) :]: np.array(a) for k, a in arrays.items() if k.startswith(prefix)}
        states.append(({**wmeta, "step": step}, {"params": params, **tensors}))
    return gather(states)
