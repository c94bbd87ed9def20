"""Bonjour discovery of Orchard workers (python-zeroconf). Never imports grpc or engine.rpc:
it hands out plain PeerRecords; connecting and probing is the rpc layer's job."""

from engine.discovery.advertiser import DEFAULT_TTL_S, Advertiser
from engine.discovery.browser import Browser
from engine.discovery.facts import host_facts, local_ipv4_addresses
from engine.discovery.record import (
    PROTOCOL_VERSION,
    SERVICE_TYPE,
    PeerRecord,
    encode_txt,
    parse_txt,
    record_from_worker_info,
)

__all__ = [
    "DEFAULT_TTL_S",
    "PROTOCOL_VERSION",
    "SERVICE_TYPE",
    "Advertiser",
    "Browser",
    "PeerRecord",
    "encode_txt",
    "host_facts",
    "local_ipv4_addresses",
    "parse_txt",
    "record_from_worker_info",
]
