"""numpy arrays <-> the wire ``Tensor`` (raw little-endian bytes, shape, dtype name).

numpy has no bfloat16, so bf16 travels as its raw 16-bit pattern with dtype "bfloat16" and
is widened to float32 on arrival (master weights and optimizer state are fp32 anyway).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from engine.rpc.gen import orchard_pb2 as pb

ALLOWED_DTYPES = {"float32", "float16", "int32", "int64", "uint8", "uint32", "bool", "bfloat16"}


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def split_array(array: np.ndarray, chunk_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """(offset, piece, last) covering the array's bytes; one empty piece for an empty array.
    Each piece is copied once, straight from the array (no whole-array bytes first)."""
    raw = memoryview(np.ascontiguousarray(array)).cast("B")
    if not len(raw):
        yield 0, b"", True
        return
    for off in range(0, len(raw), chunk_bytes):
        piece = raw[off : off + chunk_bytes]
        yield off, piece.tobytes(), off + len(piece) >= len(raw)


def tensor_header(array: np.ndarray, dtype: str | None = None) -> pb.Tensor:
    return pb.Tensor(shape=list(array.shape), dtype=dtype or array.dtype.name)


def join_array(pieces: list[bytes], shape: list[int], dtype: str, name: str) -> np.ndarray:
    """Rebuild an array from its pieces; raises ValueError naming the tensor when bad."""
    if dtype not in ALLOWED_DTYPES:
        raise ValueError(f"tensor {name!r}: dtype {dtype!r} is not one of {sorted(ALLOWED_DTYPES)}")
    np_dtype = np.dtype(np.uint16) if dtype == "bfloat16" else np.dtype(dtype)
    count = int(np.prod(shape)) if shape else 1
    size = sum(len(p) for p in pieces)
    if size != count * np_dtype.itemsize:
        raise ValueError(f"tensor {name!r}: {size} bytes do not fit shape {list(shape)} of {dtype}")
    arr = np.empty(shape, np_dtype)  # the pieces are copied into it once
    flat, at = arr.reshape(-1).view(np.uint8), 0
    for p in pieces:
        flat[at : at + len(p)] = np.frombuffer(p, np.uint8)
        at += len(p)
    return bf16_bits_to_f32(arr) if dtype == "bfloat16" else arr
