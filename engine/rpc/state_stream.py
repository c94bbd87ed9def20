"""Worker state (named numpy tensors + a JSON meta dict) as a stream of StateChunk messages.

Each tensor goes as one or more chunks under its name (``last`` on its final piece); the meta
dict travels once under META_NAME. Large optimizer states thus never exceed the message limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from engine.rpc.gen import orchard_pb2 as pb
from engine.rpc.server import CHUNK_BYTES
from engine.rpc.tensors import join_array, split_array, tensor_header

META_NAME = "__meta__"


def encode_state(
    meta: dict[str, Any], tensors: dict[str, np.ndarray], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[pb.StateChunk]:
    yield pb.StateChunk(name=META_NAME, meta_json=json.dumps(meta).encode(), last=True)
    for name, array in tensors.items():
        for offset, piece, last in split_array(array, chunk_bytes):
            t = tensor_header(array)
            t.data = piece
            yield pb.StateChunk(name=name, tensor=t, offset=offset, last=last)


def decode_state(chunks: Iterable[pb.StateChunk]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Rebuild (meta, tensors); raises ValueError naming the tensor on a malformed stream."""
    meta: dict[str, Any] = {}
    tensors: dict[str, np.ndarray] = {}
    pending: dict[str, list[bytes]] = {}
    sizes: dict[str, int] = {}
    for c in chunks:
        if c.name == META_NAME:
            try:
                meta = json.loads(c.meta_json.decode() or "{}")
            except ValueError as e:
                raise ValueError(f"state meta: not valid JSON: {e}") from None
            continue
        if not c.name or c.name in tensors:
            raise ValueError(f"state tensor {c.name!r}: empty or repeated name")
        parts = pending.setdefault(c.name, [])
        if c.offset != sizes.get(c.name, 0):
            raise ValueError(
                f"state tensor {c.name!r}: piece at offset {c.offset}, expected {sizes.get(c.name, 0)}"
            )
        parts.append(c.tensor.data)
        sizes[c.name] = sizes.get(c.name, 0) + len(c.tensor.data)
        if c.last:
            tensors[c.name] = join_array(parts, list(c.tensor.shape), c.tensor.dtype, c.name)
            del pending[c.name]
    if pending:
        raise ValueError(f"state stream ended inside tensors {sorted(pending)}")
    return meta, tensors
