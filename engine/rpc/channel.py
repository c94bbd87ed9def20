"""gRPC channel and server options for the collective data plane.

Message sizes are explicit on both sides (pieces are far smaller), keepalive notices a
dead peer within seconds, and the HTTP/2 windows are large so 4 MiB pieces stream at memory
speed on a LAN or loopback.
"""

from __future__ import annotations

from typing import Any

import grpc

PIECE_BYTES = 4 * 1024 * 1024  # the largest payload in one message
MAX_MESSAGE_BYTES = PIECE_BYTES + 64 * 1024  # payload + header, with room to spare
KEEPALIVE_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.http2.lookahead_bytes", 8 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # grpcio waits this long for a ping's answer; its 60 s default hid a dead link for 70 s.
    ("grpc.http2.ping_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Each peer gets its own connection even when two peers share a host.
        ("grpc.use_local_subchannel_pool", 1),
        *KEEPALIVE_OPTIONS,
    ]


def server_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.so_reuseport", 0),
        *KEEPALIVE_OPTIONS,
    ]


def open_channel(
    address: str, max_message_bytes: int = MAX_MESSAGE_BYTES, cert_pem: bytes | None = None
) -> grpc.Channel:
    """A channel to a peer (chunks carry the group token): plain TCP between local workers,
    TLS pinned to ``cert_pem`` between remote workers (the coordinator's pins, via SetupJob)."""
    if cert_pem:
        from engine.rpc.tls import pinned_channel

        return pinned_channel(address, cert_pem, options=channel_options(max_message_bytes))
    return grpc.insecure_channel(address, options=channel_options(max_message_bytes))
