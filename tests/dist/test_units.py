"""Single-process units: shard bounds, codecs, mailbox reassembly, wire frames, bucketing."""

from __future__ import annotations

import threading

import mlx.core as mx
import numpy as np
import pytest

from engine.dist.bucketing import FlatLayout, bucket_ranges, bucket_shards
from engine.dist.group import as_wire, wire_to_f32
from engine.dist.compression import decode, encode, roundtrip
from engine.dist.mailbox import CollectiveError, Mailbox
from engine.dist.shards import chunk_bounds, shard_bounds
from engine.rpc.collective_wire import decode_frame, encode_frame
from engine.rpc.gen import orchard_pb2


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 100, 101])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shard_bounds_match_array_split(n, size):
    x = np.arange(n)
    got = [x[a:b] for a, b in shard_bounds(n, size)]
    for g, want in zip(got, np.array_split(x, size), strict=True):
        assert np.array_equal(g, want)


def test_chunk_bounds_cover_range_and_never_empty():
    assert chunk_bounds(3, 3, 4) == [(3, 3)]
    assert chunk_bounds(0, 10, 4) == [(0, 4), (4, 8), (8, 10)]


@pytest.mark.parametrize("codec,rel", [("bf16", 2.0**-8), ("fp16", 2.0**-11)])
def test_codec_error_is_bounded(codec, rel):
    x = np.random.default_rng(0).standard_normal(10_001).astype(np.float32)
    y = roundtrip(x, codec)
    assert y.dtype == np.float32
    assert np.all(np.abs(y - x) <= rel * np.abs(x) + 1e-7)
    data, dtype = encode(x, codec)
    assert len(data) == 2 * x.size and np.array_equal(decode(data, dtype), y)


def test_bf16_rounds_to_nearest_even_and_keeps_specials():
    x = np.random.default_rng(1).standard_normal(4097).astype(np.float32) * 1e3
    u = x.view(np.uint32)
    want = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16).astype(np.uint32).view(np.float32)
    assert np.array_equal(roundtrip(x, "bf16"), want)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    got = roundtrip(special, "bf16")
    assert np.isnan(got[0]) and np.array_equal(got[1:], special[1:])


def test_mailbox_reassembles_pieces_out_of_order():
    box = Mailbox("t")
    payload = bytes(range(256)) * 10
    for off in (1024, 0, 2048):
        box.put(7, 1, 3, off, len(payload), payload[off : off + 1024], "float32")
    data, dtype = box.take(7, 1, 3, timeout=1.0)
    assert bytes(data) == payload and dtype == "float32"


def test_mailbox_times_out_and_fails_with_clear_messages():
    box = Mailbox("t")
    with pytest.raises(CollectiveError, match="part 2 from rank 1 did not arrive"):
        box.take(1, 1, 2, timeout=0.05)
    threading.Timer(0.05, box.fail, args=(RuntimeError("peer gone"),)).start()
    with pytest.raises(CollectiveError, match="peer gone"):
        box.take(1, 1, 2, timeout=5.0)
    with pytest.raises(ValueError, match="does not fit"):
        box.put(1, 0, 0, 8, 10, b"abcd", "float32")


def test_wire_frames_are_valid_protobuf_both_ways():
    payload = np.arange(1000, dtype=np.float32).tobytes()
    raw = encode_frame(b"tok", 300, 2, 5, 4096, 8192, payload, b"float32")
    msg = orchard_pb2.CollectiveChunk.FromString(raw)
    assert (msg.group_token, msg.op_id, msg.src, msg.part, msg.offset, msg.total, msg.dtype) == (
        "tok",
        300,
        2,
        5,
        4096,
        8192,
        "float32",
    )
    assert msg.data == payload
    frame = decode_frame(msg.SerializeToString())
    assert (frame.op_id, frame.src, frame.part, frame.total, bytes(frame.data)) == (
        300,
        2,
        5,
        8192,
        payload,
    )
    with pytest.raises(ValueError, match="runs past the end"):
        decode_frame(raw[:-10])


def test_layout_flatten_unflatten_and_buckets():
    tree = {"a": {"w": mx.ones((3, 4)), "b": mx.zeros((5,))}, "c": [mx.full((2, 2), 2.0)]}
    layout = FlatLayout(tree)
    flat = layout.flatten(tree)
    assert flat.size == 21 and layout.total == 21
    back = layout.unflatten(flat)
    assert np.array_equal(np.array(back["c"][0]), np.full((2, 2), 2.0))
    # the views share the vector's buffer: a model holding them holds no copy
    assert (
        np.asarray(back["a"]["w"]).__array_interface__["data"][0]
        == (np.asarray(flat).__array_interface__["data"][0])
    )
    # 8 floats: the 12-float tensor is split
    buckets = bucket_ranges(layout, 8 * 4, min_buckets=1, min_bytes=0)
    assert buckets[0][0] == 0 and buckets[-1][1] == 21
    assert all(b - a <= 8 for a, b in buckets)
    assert all(b1 == a2 for (_, b1), (a2, _) in zip(buckets, buckets[1:], strict=False))
    with pytest.raises(ValueError, match="missing"):
        layout.flatten({"a": {"w": mx.ones((3, 4))}})


def test_buckets_are_at_least_four_and_shards_cut_at_their_edges():
    tree = {f"l{i}": mx.zeros((1000,)) for i in range(8)}
    layout = FlatLayout(tree)
    assert len(bucket_ranges(layout, 32 << 20, min_bytes=0)) == 8  # 8000 floats, 8 buckets
    assert len(bucket_ranges(layout, 32 << 20)) == 1  # but no bucket under 1 MiB
    assert bucket_ranges(layout, 8000, min_buckets=4, min_bytes=0) == [
        (i * 2000, i * 2000 + 2000) for i in range(4)
    ]
    # rank shards of 8000 over 3 ranks: [0, 2667) [2667, 5334) [5334, 8000)
    assert bucket_shards((2000, 4000), 8000, 3) == [(0, 667), (667, 2000), (2000, 2000)]
    assert bucket_shards((6000, 8000), 8000, 3) == [(0, 0), (0, 0), (0, 2000)]
    pieces = [bucket_shards(b, 8000, 3) for b in bucket_ranges(layout, 8000, min_bytes=0)]
    assert sum(hi - lo for p in pieces for lo, hi in [p[1]]) == 2667  # rank 1 gets its whole shard


@pytest.mark.parametrize("codec", ["none", "bf16", "fp16"])
def test_wire_buffers_are_read_in_place(codec):
    x = mx.random.normal((1000,))
    dtype = {"none": mx.float32, "bf16": mx.bfloat16, "fp16": mx.float16}[codec]
    narrow = x.astype(dtype)
    mx.eval(narrow)
    wire = as_wire(narrow, codec)
    assert (
        wire.__array_interface__["data"][0]
        == np.frombuffer(memoryview(narrow), np.uint8).ctypes.data
    )
    assert np.array_equal(wire_to_f32(wire, codec), np.array(narrow.astype(mx.float32)))
    if codec != "none":  # a float32 buffer is encoded to the same bits
        assert np.array_equal(as_wire(np.array(x), codec), wire)
