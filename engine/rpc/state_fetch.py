"""The asking end of Collective.FetchState: a worker reads part of a peer's state.

It reaches the peer as the collectives do: the address the coordinator gave for that rank,
TLS pinned to the peer's certificate between remote workers (plain TCP between local ones),
and the group token, which the peer checks (engine/rpc/collective_service.py).
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np

from engine.rpc.channel import open_channel
from engine.rpc.gen import orchard_pb2 as pb
from engine.rpc.gen import orchard_pb2_grpc
from engine.rpc.state_stream import decode_state


class FetchFailed(RuntimeError):
    """A peer did not serve its part: it could not be reached, refused (another step, not
    of this group, not holding those moments) or broke off. The message names the peer."""

    def __init__(self, rank: int, address: str, code: grpc.StatusCode | None, details: str):
        self.rank, self.address, self.code, self.details = rank, address, code, details
        name = code.name if code is not None else "ERROR"
        super().__init__(f"peer rank {rank} ({address}): {name}: {details}")


def fetch_state(
    rank: int, address: str, group_token: str, step: int, params: bool, lo: int, hi: int,
    src: int, cert_pem: str = "", timeout_s: float = 60.0,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:  # fmt: skip
    """Peer ``rank``'s parameters and counters (``params``) and moments ``[lo, hi)`` as of
    ``step``; ``src`` is the asking rank. Raises FetchFailed."""
    channel = open_channel(address, cert_pem=cert_pem.encode("ascii") if cert_pem else None)
    try:
        stub = orchard_pb2_grpc.CollectiveStub(channel)
        request = pb.FetchStateRequest(
            group_token=group_token, step=step, params=params, lo=lo, hi=hi, src=src
        )
        return decode_state(stub.FetchState(request, timeout=timeout_s))
    except grpc.RpcError as e:
        raise FetchFailed(rank, address, e.code(), e.details() or "") from None
    except ValueError as e:  # a stream that does not decode
        raise FetchFailed(rank, address, None, str(e)) from None
    finally:
        channel.close()
