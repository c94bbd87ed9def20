"""Build a Group for a sync mode: the one call the worker process makes.

gRPC modes: the worker hosts :class:`engine.rpc.collective_service.CollectiveServicer` on its
server, over a :class:`Mailbox` it binds to the run's group token, and calls
``make_group(mode, rank, peers, token, mailbox, ...)``. ``mlx`` needs MLX_HOSTFILE/MLX_RANK
in the environment first (see :mod:`engine.dist.mlx_env`).
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.dist.group import Group, SingleGroup
from engine.dist.mailbox import Mailbox
from engine.dist.p2p import CHUNK_BYTES, ONE_SHOT_BYTES

# Which point-to-point schedule carries each sync mode's gradients.
MODE_SCHEDULE = {
    "all-reduce": "direct",
    "reduce-scatter": "direct",
    "parameter-server": "direct",
    "ring": "ring",
    "mlx": "mlx",
}


def make_group(
    mode: str,
    rank: int,
    peers: Sequence[str],
    group_token: str,
    mailbox: Mailbox | None,
    compression: str = "none",
    timeout_s: float = 120.0,
    chunk_bytes: int = CHUNK_BYTES,
    metadata: Sequence[tuple[str, str]] = (),
    op_space: int = 0,
    one_shot_bytes: int = ONE_SHOT_BYTES,
    peer_certs: Sequence[str] = (),
) -> Group:
    """A Group for ``mode`` (one of engine.config.SYNC_MODES) at ``rank`` of ``len(peers)``.

    Several groups may share one mailbox if each has its own ``op_space`` (0, 1, ...).
    ``peer_certs`` (PEM by rank, remote workers): reach each peer over TLS pinned to it."""
    if mode not in MODE_SCHEDULE:
        raise ValueError(f"dist.mode: expected one of {', '.join(MODE_SCHEDULE)}, got {mode!r}")
    if len(peers) == 1:
        return SingleGroup()
    schedule = MODE_SCHEDULE[mode]
    if schedule == "mlx":
        from engine.dist.mlx_group import MlxGroup

        return MlxGroup(compression=compression)
    if mailbox is None:
        raise ValueError(f"dist.mode {mode!r}: a gRPC group needs the worker's collective mailbox")
    from engine.rpc.collective_client import GrpcTransport  # only engine.rpc imports grpc

    if not mailbox.token_ok(group_token):
        mailbox.set_token(group_token)  # normally done at job setup, before any peer sends
    transport = GrpcTransport(
        rank, peers, group_token, mailbox, timeout_s=timeout_s, metadata=metadata,
        peer_certs=peer_certs,
    )  # fmt: skip
    if schedule == "ring":
        from engine.dist.ring import RingGroup

        return RingGroup(transport, compression, chunk_bytes, op_space, one_shot_bytes)
    from engine.dist.direct import DirectGroup

    return DirectGroup(transport, compression, chunk_bytes, one_shot_bytes, op_space)
