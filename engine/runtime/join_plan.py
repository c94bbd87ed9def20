"""Who takes which part of the group's state from whom when workers join (Worker.PullState).

Ranks ``0..before-1`` hold the current step's state, laid out for ``before`` workers; ranks
``before..world-1`` just joined (set up, their state fresh). Each newcomer takes the
parameters and its moments from the workers in the group, worker to worker. Outside ZeRO-1
the others hold all they need and take nothing. ZeRO-1 cuts the moments by world size, so
every worker's shard moves: each keeps what it already holds of its new shard and takes
only the rest, from the peers whose old shard holds it (the least data that can move).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.runtime.full_state import moment_range


@dataclass(frozen=True)
class Pull:
    """What one worker takes: the parameters and counters of ``params_from`` (-1: it keeps
    its own) and its moments as ``(rank, lo, hi)`` pieces, in order."""

    params_from: int
    moments: tuple[tuple[int, int, int], ...]

    def peers(self, rank: int) -> set[int]:
        """The other workers this pull reads from."""
        out = {r for r, lo, hi in self.moments if hi > lo} | {self.params_from}
        return out - {-1, rank}


def plan_pulls(mode: str, n: int, before: int, world: int) -> dict[int, Pull]:
    """The pulls that give every worker of ``world`` the state, by rank (a worker that needs
    nothing is not in it). ``n``: trainable parameters."""
    if not 1 <= before <= world:
        raise ValueError(f"plan_pulls: expected 1 <= before <= world, got {before}, {world}")
    held = [moment_range(mode, r, before, n) for r in range(before)]
    out: dict[int, Pull] = {}
    for rank in range(world):
        joined = rank >= before
        if not joined and mode != "reduce-scatter":
            continue  # its parameters and moments are the group's already
        # a newcomer reads from one survivor where it can (newcomers spread over them);
        # a ZeRO-1 survivor first from its own old shard
        first = (rank - before) % before if joined else rank
        pieces = _cover(*moment_range(mode, rank, world, n), held, first)
        if joined:
            sizes = {r: 0 for r in range(before)}
            for r, lo, hi in pieces:
                sizes[r] += hi - lo
            src = max(sizes, key=lambda r: (sizes[r], r == first))  # one call for both
            out[rank] = Pull(src, pieces)
        else:
            out[rank] = Pull(-1, pieces)
    return out


def _cover(lo: int, hi: int, held: list[tuple[int, int]], first: int) -> tuple:
    """``[lo, hi)`` as pieces of the ranges ``held`` (by rank), in order: at each point the
    rank ``first`` if it holds it, else the one whose range reaches farthest."""
    pieces, at = [], lo
    while at < hi:
        holders = [r for r, (a, b) in enumerate(held) if a <= at < b]
        if not holders:
            raise ValueError(f"plan_pulls: no worker holds moment {at}")
        r = first if first in holders else max(holders, key=lambda r: held[r][1])
        end = min(hi, held[r][1])
        pieces.append((r, at, end))
        at = end
    return tuple(pieces)
