"""Shared machinery of the point-to-point (gRPC) groups: op ids, codecs, sends and receives.

Subclasses (direct, ring) only write the reduce-scatter/all-gather schedule. Parts are
numbered ``(phase, step, chunk)`` packed into one int so interleaved phases never mix.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from engine.dist.compression import check_codec, decode, encode, roundtrip
from engine.dist.group import Group, as_f32, as_wire, wire_to_f32
from engine.dist.shards import shard_bounds
from engine.dist.transport import Transport

log = logging.getLogger(__name__)

CHUNK_BYTES = 4 * 1024 * 1024  # pipelining unit; also well under the gRPC message limit
# At or below this size an all-reduce is one round of whole-buffer sends to every peer:
# latency-bound sizes gain more from one round than they lose in bytes (as NCCL's LL protocol).
ONE_SHOT_BYTES = 256 * 1024
ONE_SHOT_MAX_RANKS = 8  # the ring only: beyond this it would cost too many connections


def part_id(phase: int, step: int, chunk: int) -> int:
    """Pack (phase < 8, step < 256, chunk < 2**20) into one non-negative int32."""
    if not (0 <= phase < 8 and 0 <= step < 256 and 0 <= chunk < (1 << 20)):
        raise ValueError(f"part id out of range: phase={phase} step={step} chunk={chunk}")
    return (phase << 28) | (step << 20) | chunk


class P2PGroup(Group):
    """A Group over a :class:`Transport`; subclasses implement the schedules."""

    def __init__(
        self,
        transport: Transport,
        compression: str = "none",
        chunk_bytes: int = CHUNK_BYTES,
        op_space: int = 0,
        one_shot_bytes: int = ONE_SHOT_BYTES,
    ):
        self.transport = transport
        self.one_shot_bytes = one_shot_bytes
        self.rank, self.size = transport.rank, transport.size
        self.codec = check_codec(compression)
        self.chunk_elems = max(1, chunk_bytes // 4)
        # Groups sharing one mailbox need disjoint op ids: each gets its own space.
        self._op = op_space << 40
        self._lock = threading.Lock()  # one collective at a time per group
        self.bytes_sent = 0

    # ---- plumbing ------------------------------------------------------------------------
    def _next_op(self) -> int:
        self._op += 1
        return self._op

    def _send(self, dst: int, op: int, part: int, x: np.ndarray, codec: str) -> None:
        data, dtype = encode(x, codec)
        self.bytes_sent += len(data)
        self.transport.send(dst, op, part, data, dtype)

    def _send_raw(self, dst: int, op: int, part: int, data: Any, dtype: str) -> None:
        self.bytes_sent += len(data)
        self.transport.send(dst, op, part, data, dtype)

    def _recv(self, src: int, op: int, part: int) -> tuple[np.ndarray, Any, str]:
        data, dtype = self.transport.recv(src, op, part)
        return decode(data, dtype), data, dtype

    # ---- ops shared by every point-to-point schedule ---------------------------------------
    def broadcast(self, buf: Any, root: int = 0) -> np.ndarray:
        x = as_f32(buf)
        with self._lock:
            op = self._next_op()
            if self.rank == root:
                for dst in range(self.size):
                    if dst != root:
                        self._send(dst, op, part_id(0, 0, 0), x, "none")
                out = x.copy()
            else:
                got, _, _ = self._recv(root, op, part_id(0, 0, 0))
                if got.size != x.size:
                    raise ValueError(f"broadcast: root sent {got.size} elements, expected {x.size}")
                out = got.copy()
            self.transport.flush()
        return out

    def reduce(self, buf: Any, root: int = 0) -> np.ndarray | None:
        """Every rank sends to ``root``, which sums in rank order (parameter-server push)."""
        x = as_wire(buf, self.codec)
        with self._lock:
            op = self._next_op()
            if self.rank != root:
                self._send(root, op, part_id(0, 0, 0), x, self.codec)
                self.transport.flush()
                return None
            acc = np.zeros(x.size, np.float32)
            for src in range(self.size):
                if src == root:
                    acc += roundtrip(x, self.codec)
                else:
                    got, _, _ = self._recv(src, op, part_id(0, 0, 0))
                    acc += got
            self.transport.flush()
            return acc

    def barrier(self) -> None:
        self.all_reduce(np.zeros(1, np.float32))

    def _one_shot(self, x: np.ndarray, op: int) -> np.ndarray:
        data, dtype = encode(x, self.codec)
        for dst in range(self.size):
            if dst != self.rank:
                self._send_raw(dst, op, part_id(2, 0, 0), data, dtype)
        mine = decode(data, dtype)
        acc = np.zeros(x.size, np.float32)
        for src in range(self.size):
            acc += mine if src == self.rank else self._recv(src, op, part_id(2, 0, 0))[0]
        return acc

    def close(self) -> None:
        self.transport.close()

    def _segments(self, n: int) -> list[tuple[int, int]]:
        return shard_bounds(n, self.size)

    def _f32(self, x: np.ndarray) -> np.ndarray:
        """A float32 copy of a wire-form buffer (what a group of one returns)."""
        return wire_to_f32(x, self.codec)
