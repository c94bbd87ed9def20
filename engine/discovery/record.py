"""PeerRecord (what discovery hands out) and the TXT record that carries it on the wire.

TXT items are ``key=value`` strings of at most 254 bytes each (one length byte on the wire);
the whole record stays under 1300 bytes so it fits one Ethernet frame (RFC 6763 section 6.2).
Parsing never raises: a record that cannot be read becomes an invalid PeerRecord with the
reason, so the app can show "incompatible worker" instead of a traceback.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from engine.machine import PROTOCOL_VERSION

log = logging.getLogger(__name__)

SERVICE_TYPE = "_orchard._tcp.local."
MAX_ITEM_BYTES = 254
MAX_TXT_BYTES = 1300
MAX_TXT_ITEMS = 32
STATES = ("idle", "busy")

_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_FP = re.compile(r"^[0-9a-f]{64}$")
_FIXED = ("id", "pv", "mem", "state", "paired", "fp")  # never truncated: they identify the peer
_FREE_TEXT = ("host", "chip", "mlx", "ver")


@dataclass(frozen=True)
class PeerRecord:
    """One worker as discovery sees it. ``key`` is unique per peer (service name or host:port)."""

    worker_id: str = ""
    host: str = ""
    addresses: tuple[str, ...] = ()
    port: int = 0
    protocol: str = PROTOCOL_VERSION
    chip: str = ""
    memory_bytes: int = 0
    mlx_version: str = ""
    orchard_version: str = ""
    state: str = "idle"
    paired: bool = False
    fingerprint: str = ""  # sha256 of the worker's TLS certificate: pinned after pairing
    service_name: str = ""
    manual: bool = False  # added by address; not seen on the network (the rpc layer probes it)
    valid: bool = True
    problem: str = ""
    truncated: tuple[str, ...] = ()
    last_seen: float = field(default=0.0, compare=False)

    @property
    def key(self) -> str:
        return self.service_name or f"{self.host}:{self.port}"

    @property
    def address(self) -> str:
        host = self.addresses[0] if self.addresses else self.host
        return f"{host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            addresses=list(self.addresses),
            truncated=list(self.truncated),
            key=self.key,
            address=self.address,
        )
        return d


def record_from_worker_info(info: Mapping[str, Any], **fields: Any) -> PeerRecord:
    """A PeerRecord from the worker's Describe fields (engine/worker/info.worker_info keys);
    ``fields`` adds or overrides (fingerprint=..., paired=..., state=...)."""
    base = PeerRecord(
        worker_id=str(info.get("worker_id", "")), host=str(info.get("hostname", "")),
        protocol=str(info.get("protocol_version", PROTOCOL_VERSION)), chip=str(info.get("chip", "")),
        memory_bytes=int(info.get("memory_bytes", 0) or 0), mlx_version=str(info.get("mlx_version", "")),
        orchard_version=str(info.get("orchard_version", "")),
    )  # fmt: skip
    return replace(base, **fields)


def encode_txt(record: PeerRecord) -> dict[str, str]:
    """The TXT properties for ``record``; free-text values are cut to fit, with a note."""
    if not _ID.match(record.worker_id):
        raise ValueError(
            f"worker_id {record.worker_id!r}: expected 1-64 letters, digits, '.', '_' or '-'"
        )
    if record.fingerprint and not _FP.match(record.fingerprint):
        raise ValueError(
            "fingerprint: expected 64 lowercase hex digits (sha256 of the certificate)"
        )
    if record.state not in STATES:
        raise ValueError(f"state {record.state!r}: expected one of {', '.join(STATES)}")
    props = {
        "id": record.worker_id, "pv": record.protocol, "host": record.host, "chip": record.chip,
        "mem": str(int(record.memory_bytes)), "mlx": record.mlx_version, "ver": record.orchard_version,
        "state": record.state, "paired": "yes" if record.paired else "no", "fp": record.fingerprint,
    }  # fmt: skip
    cut = []
    for key in _FREE_TEXT:
        room = MAX_ITEM_BYTES - len(key) - 1
        if len(props[key].encode()) > room:
            props[key] = _cut(props[key], room)
            cut.append(key)
    for key in _FIXED:
        if len(f"{key}={props[key]}".encode()) > MAX_ITEM_BYTES:
            raise ValueError(
                f"TXT {key}: {len(props[key].encode())} bytes, too long for one TXT item"
            )
    while _txt_size(props) > MAX_TXT_BYTES - 40:  # leave room for the "trunc" note
        longest = max(_FREE_TEXT, key=lambda k: len(props[k].encode()))
        props[longest] = _cut(props[longest], len(props[longest].encode()) // 2)
        cut.append(longest)
    if cut:
        props["trunc"] = ",".join(sorted(set(cut)))
        log.warning("TXT values too long for mDNS, truncated: %s", props["trunc"])
    return props


def _cut(text: str, max_bytes: int) -> str:
    return text.encode()[:max_bytes].decode("utf-8", errors="ignore")  # never split a character


def _txt_size(props: dict[str, str]) -> int:
    return sum(1 + len(f"{k}={v}".encode()) for k, v in props.items())


def split_txt(raw: bytes) -> tuple[dict[str, str], str]:
    """Unpack wire TXT bytes into lower-cased keys; the second value is a problem or ''."""
    if len(raw) > MAX_TXT_BYTES:
        return {}, f"TXT record is {len(raw)} bytes (limit {MAX_TXT_BYTES})"
    props: dict[str, str] = {}
    pos, index = 0, 0
    while pos < len(raw):
        length = raw[pos]
        item = raw[pos + 1 : pos + 1 + length]
        if len(item) < length:
            return props, f"TXT item {index} claims {length} bytes but only {len(item)} remain"
        pos += 1 + length
        index += 1
        if index > MAX_TXT_ITEMS:
            return props, f"TXT record has more than {MAX_TXT_ITEMS} items"
        if not item:
            continue
        try:
            text = item.decode("utf-8")
        except UnicodeDecodeError:
            return props, f"TXT item {index - 1} is not UTF-8 text"
        key, _, value = text.partition("=")
        key = key.lower()
        if key and key not in props:  # RFC 6763 6.4: the first occurrence wins
            props[key] = value
    return props, ""


def parse_txt(raw: bytes, **where: Any) -> PeerRecord:
    """A PeerRecord from wire TXT bytes plus ``where`` (service_name, addresses, port)."""
    props, problem = split_txt(raw)
    memory = props.get("mem", "0")
    base = PeerRecord(
        worker_id=props.get("id", ""), host=props.get("host", ""), protocol=props.get("pv", ""),
        chip=props.get("chip", ""), mlx_version=props.get("mlx", ""), orchard_version=props.get("ver", ""),
        state=props.get("state", "idle"), paired=props.get("paired") == "yes", fingerprint=props.get("fp", ""),
        memory_bytes=int(memory) if memory.isdigit() else 0,
        truncated=tuple(t for t in props.get("trunc", "").split(",") if t), **where,
    )  # fmt: skip
    problem = problem or _field_problem(props)
    return replace(base, valid=False, problem=problem) if problem else base


def _field_problem(props: dict[str, str]) -> str:
    for key in ("id", "pv", "fp"):
        if key not in props:
            return f"TXT has no {key!r} item"
    if not _ID.match(props["id"]):
        return f"TXT id {props['id'][:40]!r}: expected 1-64 letters, digits, '.', '_' or '-'"
    if not _FP.match(props["fp"]):
        return "TXT fp: expected 64 lowercase hex digits"
    if not props.get("mem", "0").isdigit():
        return f"TXT mem {props['mem'][:20]!r}: expected a byte count"
    if props.get("state", "idle") not in STATES:
        return f"TXT state {props['state'][:20]!r}: expected idle or busy"
    if props.get("paired", "no") not in ("yes", "no"):
        return f"TXT paired {props['paired'][:20]!r}: expected yes or no"
    return ""
