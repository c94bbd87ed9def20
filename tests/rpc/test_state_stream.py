"""Worker state as a chunked stream: exact round trip, bf16 widening, malformed streams named."""

import numpy as np
import pytest

from engine.rpc.gen import orchard_pb2 as pb
from engine.rpc.state_stream import decode_state, encode_state
from engine.rpc.tensors import join_array


def test_round_trip_in_small_chunks():
    rng = np.random.default_rng(0)
    tensors = {"params": rng.standard_normal(1000).astype(np.float32), "m": np.zeros(0, np.float32),
               "ids": np.arange(7, dtype=np.int64).reshape(7, 1)}  # fmt: skip
    meta = {"rank": 1, "mode": "reduce-scatter", "lo": 10}
    chunks = list(encode_state(meta, tensors, chunk_bytes=256))
    assert sum(c.name == "params" for c in chunks) == 16  # 4000 bytes in 256-byte pieces
    got_meta, got = decode_state(chunks)
    assert got_meta == meta and set(got) == set(tensors)
    for k, v in tensors.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == v.dtype


def test_bf16_bits_widen_to_float32():
    x = np.array([1.0, -2.5, 3.140625], np.float32)
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)
    np.testing.assert_array_equal(join_array([bits.tobytes()], [3], "bfloat16", "x"), x)


def test_bad_streams_are_named():
    t = pb.Tensor(data=b"\0" * 6, shape=[2], dtype="float32")
    with pytest.raises(ValueError, match="'w'.*do not fit"):
        decode_state([pb.StateChunk(name="w", tensor=t, last=True)])
    with pytest.raises(ValueError, match="ended inside"):
        decode_state(
            [pb.StateChunk(name="w", tensor=pb.Tensor(data=b"\0" * 4, shape=[2], dtype="float32"))]
        )
    with pytest.raises(ValueError, match="dtype 'object'"):
        decode_state(
            [pb.StateChunk(name="w", tensor=pb.Tensor(shape=[1], dtype="object"), last=True)]
        )
