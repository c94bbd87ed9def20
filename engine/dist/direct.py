"""All-reduce by direct sends: every rank talks to every other rank (latency-optimal).

Large buffers: reduce-scatter (rank j receives everyone's shard j and sums it) then
all-gather (rank j sends its summed shard to everyone): each rank moves 2(N-1)/N of the
buffer, in 2 rounds. Small buffers (<= ``one_shot_bytes``): one round in which every rank
sends its whole buffer to every peer and sums locally. Sums run in rank order, so every rank
gets bit-identical results (with compression, each rank also uses its own rounded copy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.dist.compression import decode, encode
from engine.dist.group import as_f32, as_wire
from engine.dist.p2p import CHUNK_BYTES, ONE_SHOT_BYTES, P2PGroup, part_id
from engine.dist.shards import chunk_bounds
from engine.dist.transport import Transport


class DirectGroup(P2PGroup):
    name = "direct"

    def __init__(
        self,
        transport: Transport,
        compression: str = "none",
        chunk_bytes: int = CHUNK_BYTES,
        one_shot_bytes: int = ONE_SHOT_BYTES,
        op_space: int = 0,
    ):
        super().__init__(transport, compression, chunk_bytes, op_space, one_shot_bytes)

    def all_reduce(self, buf: Any) -> np.ndarray:
        x = as_wire(buf, self.codec)
        if self.size == 1:
            return self._f32(x)
        with self._lock:
            op = self._next_op()
            if x.nbytes <= self.one_shot_bytes:
                out = self._one_shot(x, op)
            else:
                segs = self._segments(x.size)
                shard = self._reduce_scatter(x, op, segs)
                out = self._all_gather(shard, x.size, op, self.codec)
            self.transport.flush()
        return out

    def reduce_scatter(self, buf: Any, bounds: list[tuple[int, int]] | None = None) -> np.ndarray:
        x = as_wire(buf, self.codec)
        segs = self.segments(x.size, bounds)
        if self.size == 1:
            return self._f32(x)
        with self._lock:
            out = self._reduce_scatter(x, self._next_op(), segs)
            self.transport.flush()
        return out

    def all_gather(self, shard: Any, n: int) -> np.ndarray:
        s = as_f32(shard)
        start, stop = self.shard_of(n)
        if s.size != stop - start:
            raise ValueError(
                f"all_gather: rank {self.rank} should hold {stop - start} elements, got {s.size}"
            )
        if self.size == 1:
            return s.copy()
        with self._lock:
            out = self._all_gather(s, n, self._next_op(), "none")
            self.transport.flush()
        return out

    # ---- schedules ---------------------------------------------------------------------
    def _reduce_scatter(self, x: np.ndarray, op: int, segs: list[tuple[int, int]]) -> np.ndarray:
        chunks = [chunk_bounds(a, b, self.chunk_elems) for a, b in segs]
        # chunk-major order: every peer gets its first chunk early, so adds overlap receives
        for k in range(max(len(c) for c in chunks)):
            for dst in range(self.size):
                if dst != self.rank and k < len(chunks[dst]):
                    a, b = chunks[dst][k]
                    self._send(dst, op, part_id(0, 0, k), x[a:b], self.codec)
        lo = segs[self.rank][0]
        acc = np.zeros(segs[self.rank][1] - lo, np.float32)
        for k, (a, b) in enumerate(chunks[self.rank]):
            mine = decode(*encode(x[a:b], self.codec))
            for src in range(self.size):  # rank order: every rank adds in the same order
                got = mine if src == self.rank else self._recv(src, op, part_id(0, 0, k))[0]
                if got.size != b - a:
                    raise ValueError(
                        f"reduce_scatter: rank {src} sent {got.size} elements, expected {b - a}"
                    )
                acc[a - lo : b - lo] += got
        return acc

    def _all_gather(self, shard: np.ndarray, n: int, op: int, codec: str) -> np.ndarray:
        segs = self._segments(n)
        out = np.empty(n, np.float32)
        lo = segs[self.rank][0]
        for k, (a, b) in enumerate(chunk_bounds(*segs[self.rank], self.chunk_elems)):
            data, dtype = encode(shard[a - lo : b - lo], codec)
            out[a:b] = decode(data, dtype)  # keep exactly what the peers get
            for dst in range(self.size):
                if dst != self.rank:
                    self._send_raw(dst, op, part_id(1, 0, k), data, dtype)
        for src in range(self.size):
            if src == self.rank:
                continue
            for k, (a, b) in enumerate(chunk_bounds(*segs[src], self.chunk_elems)):
                got = self._recv(src, op, part_id(1, 0, k))[0]
                if got.size != b - a:
                    raise ValueError(
                        f"all_gather: rank {src} sent {got.size} elements, expected {b - a}"
                    )
                out[a:b] = got
        return out
