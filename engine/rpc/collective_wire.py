"""CollectiveChunk in protobuf wire format, written and read by hand for zero-copy payloads.

The generated classes copy the payload into and out of the message (measured: 3.3 ms to
build and serialize a 4 MiB chunk, 1.1 ms to parse it, against 0.45 ms for one memcpy).
These frames are byte-for-byte valid ``orchard.v1.CollectiveChunk`` messages, so the
generated stub and servicer interoperate with them; only the hot path skips protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass

# field number -> wire type (0 varint, 2 length-delimited), as in orchard.proto
_FIELDS = {1: 2, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 2, 8: 2}


@dataclass(slots=True)
class Frame:
    """A parsed chunk; ``data`` is a memoryview into the received bytes (no copy)."""

    group_token: str = ""
    op_id: int = 0
    src: int = 0
    part: int = 0
    offset: int = 0
    total: int = 0
    data: memoryview | bytes = b""
    dtype: str = ""


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"collective frame: negative field value {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_frame(
    token: bytes,
    op_id: int,
    src: int,
    part: int,
    offset: int,
    total: int,
    data: bytes | memoryview,
    dtype: bytes,
) -> bytes:
    """One serialized CollectiveChunk; the payload is copied exactly once (by the join)."""
    head = b"".join(
        (
            b"\x0a", _varint(len(token)), token,
            b"\x10", _varint(op_id),
            b"\x18", _varint(src),
            b"\x20", _varint(part),
            b"\x28", _varint(offset),
            b"\x30", _varint(total),
            b"\x42", _varint(len(dtype)), dtype,
            b"\x3a", _varint(len(data)),
        )
    )  # fmt: skip
    return b"".join((head, data))


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("collective frame: truncated or oversized varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def decode_frame(raw: bytes) -> Frame:
    """Parse a serialized CollectiveChunk (any field order, defaults omitted)."""
    buf = memoryview(raw)
    frame = Frame()
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError(f"collective frame: field {field} runs past the end")
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise ValueError(f"collective frame: unsupported wire type {wire} for field {field}")
        if _FIELDS.get(field) != wire:
            continue  # unknown field (a newer peer): skipped, as protobuf does
        if field == 1:
            frame.group_token = bytes(value).decode("utf-8", "replace")
        elif field == 2:
            frame.op_id = value
        elif field == 3:
            frame.src = value
        elif field == 4:
            frame.part = value
        elif field == 5:
            frame.offset = value
        elif field == 6:
            frame.total = value
        elif field == 7:
            frame.data = value
        elif field == 8:
            frame.dtype = bytes(value).decode("ascii", "replace")
    return frame
