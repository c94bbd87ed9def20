"""Read safetensors headers without touching tensor data.

The format is an 8-byte little-endian header length, then that many bytes of JSON mapping
each tensor name to {dtype, shape, data_offsets}. Reading only that lets the app show a
model's size and modules for a 70B checkpoint in milliseconds.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from engine.model.errors import ModelError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format itself caps the header at 100 MB

# Bytes per element of each safetensors dtype (sub-byte types do not occur in mlx/HF files).
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip


@dataclass(frozen=True)
class TensorHeader:
    name: str
    dtype: str  # safetensors spelling: F32, BF16, U32, ...
    shape: tuple[int, ...]
    nbytes: int
    file: str

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def read_header(path: str | Path) -> dict[str, TensorHeader]:
    """Tensor name -> TensorHeader for one .safetensors file; ModelError on a damaged file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelError(f"{p}: not a safetensors file (shorter than 8 bytes)")
            (length,) = struct.unpack("<Q", head)
            file_size = p.stat().st_size
            if length > MAX_HEADER_BYTES or 8 + length > file_size:
                raise ModelError(
                    f"{p}: not a safetensors file (header length {length} does not fit "
                    f"a file of {file_size} bytes)"
                )
            raw = f.read(length)
    except OSError as e:
        raise ModelError(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{p}: safetensors header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise ModelError(f"{p}: safetensors header is not a JSON object")
    out: dict[str, TensorHeader] = {}
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = entry["data_offsets"]
            out[name] = TensorHeader(
                name=name,
                dtype=str(entry["dtype"]),
                shape=tuple(int(d) for d in entry["shape"]),
                nbytes=int(end) - int(start),
                file=str(p),
            )
            data_end = max(data_end, int(end))
        except (KeyError, TypeError, ValueError):
            raise ModelError(
                f"{p}: tensor {name!r}: expected dtype, shape and data_offsets in the header"
            ) from None
    if 8 + length + data_end > file_size:  # the header promises more bytes than the file has
        raise ModelError(
            f"{p}: truncated: its tensors need {8 + length + data_end:,} bytes, the file has "
            f"{file_size:,} (an interrupted download or copy?)"
        )
    return out
