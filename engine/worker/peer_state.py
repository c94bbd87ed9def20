"""A worker takes its state from its peers (Worker.PullState): the checks and the joining.

The coordinator says which peer holds which part; every part is fetched (Collective.
FetchState, served by ``TrainingJob.serve_state``: the counters, the parameters, a moment
range) before anything is loaded. Nothing here touches the network or MLX.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.worker.errors import InvalidRequest, OutOfOrder

State = tuple[dict[str, Any], dict[str, np.ndarray]]
COUNTERS = ("steps", "adam_step", "step", "loss_scale")  # travel with the parameters


@dataclass(frozen=True)
class Slice:
    """Moments ``[lo, hi)`` to take from the peer at ``rank``."""

    rank: int
    lo: int
    hi: int


def check_pull(meta: dict[str, Any], step: int, params_from: int, slices: list[Slice]) -> None:
    """Refuse a PullState that cannot give this worker a whole state of ``step``, before
    anything is fetched. ``meta``: this worker's own (``TrainingJob.state_meta``)."""
    rank, world = int(meta["rank"]), int(meta["world"])
    if step < 0:
        raise InvalidRequest(f"step: expected >= 0, got {step}")
    if not -1 <= params_from < world:
        raise InvalidRequest(
            f"params_from: rank {params_from} is not in this group of {world} (-1: keep its own)"
        )
    keeps_own = params_from in (-1, rank)
    if (keeps_own or any(s.rank == rank for s in slices)) and int(meta["step"]) != step:
        raise OutOfOrder(f"this worker's own state is of step {meta['step']}, not {step}: "
                         "it cannot keep any of it")  # fmt: skip
    at, lo, hi = int(meta["lo"]), int(meta["lo"]), int(meta["hi"])
    for i, s in enumerate(slices):
        if not 0 <= s.rank < world:
            raise InvalidRequest(f"moments[{i}]: rank {s.rank} is not in this group of {world}")
        if s.lo != at or s.hi < s.lo:
            raise InvalidRequest(f"moments[{i}]: [{s.lo}, {s.hi}) does not go on from {at}: "
                                 f"the pieces must tile this worker's moments [{lo}, {hi}) "
                                 "in order")  # fmt: skip
        at = s.hi
    if at != hi:
        raise InvalidRequest(f"moments: the pieces end at {at}, this worker's moments [{lo}, "
                             f"{hi}) end at {hi}")  # fmt: skip


def requests(rank: int, params_from: int, slices: list[Slice]) -> dict[int, tuple[bool, int, int]]:
    """What to ask each rank for (its own rank included, served locally): ``(params, lo,
    hi)``, the moments of a rank's pieces as one span."""
    out: dict[int, tuple[bool, int, int]] = {}
    for s in slices:
        if s.hi > s.lo:
            _, lo, hi = out.get(s.rank, (False, s.lo, s.hi))
            out[s.rank] = (False, min(lo, s.lo), max(hi, s.hi))
    src = rank if params_from == -1 else params_from
    _, lo, hi = out.get(src, (False, 0, 0))
    out[src] = (True, lo, hi)
    return out


def assemble(own: dict[str, Any], parts: dict[int, State], params_from: int,
             slices: list[Slice]) -> State:  # fmt: skip
    """This worker's new state, ready for ``put_state``, from the parts served (by rank, as
    :func:`requests` asked; ``own``: this worker's state meta, with ``n`` parameters): the
    parameters and counters of ``params_from`` (-1: its own rank), the moments of ``slices``."""
    rank = int(own["rank"])
    src = rank if params_from == -1 else params_from
    src_meta, src_tensors = parts[src]
    params = np.asarray(src_tensors.get("params", np.zeros(0)), np.float32).reshape(-1)
    if params.size != int(own["n"]):
        raise InvalidRequest(f"rank {src} sent {params.size} parameters, this job has {own['n']}")
    m, v = [], []
    for s in (s for s in slices if s.hi > s.lo):
        part_meta, part = parts[s.rank]
        at = s.lo - int(part_meta.get("lo", s.lo + 1))
        if at < 0 or "m" not in part or at + s.hi - s.lo > np.asarray(part["m"]).size:
            raise InvalidRequest(f"rank {s.rank} did not send the moments [{s.lo}, {s.hi})")
        m.append(np.asarray(part["m"], np.float32)[at : at + s.hi - s.lo])
        v.append(np.asarray(part["v"], np.float32)[at : at + s.hi - s.lo])
    lo, hi = int(own["lo"]), int(own["hi"])
    meta = {
        "mode": own["mode"], "rank": rank, "world": own["world"], "size": own["world"],
        "lo": lo, "hi": hi, **{k: src_meta.get(k) for k in COUNTERS},
    }  # fmt: skip
    joined = {
        "params": params,
        "m": np.concatenate(m) if m else np.zeros(0, np.float32),
        "v": np.concatenate(v) if v else np.zeros(0, np.float32),
    }
    if joined["m"].size != hi - lo:
        raise InvalidRequest(f"the moments pulled hold {joined['m'].size} values, this worker's "
                             f"[{lo}, {hi}) needs {hi - lo}")  # fmt: skip
    return meta, joined
