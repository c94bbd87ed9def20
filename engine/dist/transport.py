"""Point-to-point transport the gRPC collectives are written against.

The algorithms (direct, ring, parameter server) only ever ``send`` a part to a peer and
``recv`` a part from one; the gRPC implementation lives in engine/rpc (the only package that
imports grpc), so the algorithms are testable and readable without the network code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class Transport(ABC):
    rank: int
    size: int

    @abstractmethod
    def send(self, dst: int, op_id: int, part: int, data: bytes | memoryview, dtype: str) -> None:
        """Start sending ``data`` to ``dst``; the bytes are copied before this returns."""

    @abstractmethod
    def recv(self, src: int, op_id: int, part: int) -> tuple[bytes | bytearray | memoryview, str]:
        """Block until part ``(op_id, src, part)`` has arrived; returns (bytes, wire dtype)."""

    @abstractmethod
    def flush(self) -> None:
        """Wait until every send so far is acknowledged; raise CollectiveError if one failed."""

    @abstractmethod
    def close(self) -> None:
        """Release channels (idempotent)."""
