"""A safetensors file written from numpy arrays in one pass, hashed as it is written.

A checkpoint's state (46M trainable parameters: 550 MB of parameters and moments) reaches
the coordinator as numpy arrays; ``mx.save_safetensors`` would copy them into MLX first
(and, on MLX's CUDA backend, start a GPU context in the coordinator), and the manifest's
sha256 would read the file back. Here the bytes go straight from the arrays to the file and
the hash (format: https://github.com/huggingface/safetensors, "Format": an 8-byte
little-endian header size, the JSON header, padded with spaces to 8 bytes, then the data).
mx arrays are written through a numpy view (no copy); bfloat16 as its bits.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

_CODES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32", "uint16": "U16",
    "uint8": "U8", "bool": "BOOL",
}  # fmt: skip
_PIECE = 16 << 20  # bytes written and hashed at a time


def as_numpy(array: Any) -> tuple[np.ndarray, str]:
    """(contiguous numpy data, safetensors dtype code); mx arrays by view where MLX allows."""
    if isinstance(array, mx.array):
        if array.dtype == mx.bfloat16:
            return _contiguous(np.asarray(array.view(mx.uint16))), "BF16"
        array = np.asarray(array)
    a = _contiguous(np.asarray(array))
    code = _CODES.get(a.dtype.name)
    if code is None:
        raise ValueError(f"safetensors: dtype {a.dtype} cannot be written")
    return a, code


def _contiguous(a: np.ndarray) -> np.ndarray:
    """``a`` in C order, copied only if it is not (0-d arrays stay 0-d, unlike
    np.ascontiguousarray)."""
    return a if a.flags.c_contiguous else a.copy(order="C")


def dtype_name(code: str) -> str:
    """The MLX name of a safetensors dtype code (what a checkpoint manifest records)."""
    names = {v: k for k, v in _CODES.items()} | {"BF16": "bfloat16", "BOOL": "bool_"}
    return f"mlx.core.{names[code]}"


def write_safetensors(
    path: str | Path, arrays: dict[str, Any], metadata: dict[str, str] | None = None
) -> tuple[str, dict[str, tuple[list[int], str]]]:
    """Write ``arrays`` (numpy or mx) to ``path``; returns the file's sha256 and each
    tensor's (shape, dtype code)."""
    data = {name: as_numpy(a) for name, a in arrays.items()}
    header: dict[str, Any] = {}
    offset = 0
    for name, (a, code) in data.items():
        header[name] = {
            "dtype": code,
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        offset += a.nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for piece in (struct.pack("<Q", len(head)), head):
            f.write(piece)
            digest.update(piece)
        for a, _ in data.values():
            raw = memoryview(a.reshape(-1)).cast("B")
            for at in range(0, len(raw), _PIECE):
                piece = raw[at : at + _PIECE]
                f.write(piece)
                digest.update(piece)
    return digest.hexdigest(), {name: (list(a.shape), code) for name, (a, code) in data.items()}
