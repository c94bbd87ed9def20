"""Wire codecs for gradients: fp32 as is, or cast to bf16 / fp16 on send.

Sums are always accumulated in float32; only the bytes on the wire are narrower. numpy has
no bfloat16, so bf16 travels as the top half of the float32 bits (rounded to nearest even).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

CODECS = ("none", "bf16", "fp16")
_WIRE_DTYPE = {"none": "float32", "bf16": "bfloat16", "fp16": "float16"}


def check_codec(codec: str) -> str:
    if codec not in CODECS:
        raise ValueError(f"compression: expected one of {', '.join(CODECS)}, got {codec!r}")
    return codec


def wire_dtype(codec: str) -> str:
    """The dtype name a chunk carries on the wire for ``codec``."""
    return _WIRE_DTYPE[check_codec(codec)]


def encode(x: np.ndarray, codec: str) -> tuple[memoryview | bytes, str]:
    """float32 1-D array -> (bytes-like, wire dtype). ``none`` returns a view (no copy), and
    so does an array already in wire form (uint16 bf16 bits, float16)."""
    if codec == "bf16" and x.dtype == np.uint16 or codec == "fp16" and x.dtype == np.float16:
        return memoryview(np.ascontiguousarray(x)).cast("B"), _WIRE_DTYPE[codec]
    if codec == "none":
        return memoryview(np.ascontiguousarray(x, np.float32)).cast("B"), "float32"
    if codec in ("bf16", "fp16"):
        # MLX's casts are vectorised C++ (round to nearest even, NaN kept): ~2x numpy's.
        narrow = mx.array(x).astype(mx.bfloat16 if codec == "bf16" else mx.float16)
        return memoryview(np.array(narrow.view(mx.uint16))).cast("B"), _WIRE_DTYPE[codec]
    raise ValueError(f"compression: expected one of {', '.join(CODECS)}, got {codec!r}")


def decode(data: bytes | memoryview, dtype: str) -> np.ndarray:
    """Wire bytes -> float32 1-D array (a zero-copy view for float32)."""
    if dtype == "float32":
        return np.frombuffer(data, np.float32)
    if dtype == "bfloat16":
        bits = np.frombuffer(data, np.uint16)
        out = np.empty(bits.size, np.float32)
        halves = out.view(np.uint16).reshape(-1, 2)  # little-endian: (low, high) per float
        halves[:, 0] = 0
        halves[:, 1] = bits
        return out
    if dtype == "float16":
        return np.frombuffer(data, np.float16).astype(np.float32)
    raise ValueError(f"collective chunk: unknown wire dtype {dtype!r}")


def roundtrip(x: np.ndarray, codec: str) -> np.ndarray:
    """What a peer would decode from ``encode(x, codec)``: lets the sender keep the same values."""
    if codec == "none":
        return x
    data, dtype = encode(x, codec)
    return decode(data, dtype)
