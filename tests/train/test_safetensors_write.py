"""engine/train/safetensors_write.py: files that MLX and the reference safetensors reader
load as written, with the sha256 of the bytes on disk."""

from __future__ import annotations

import hashlib
import json
import struct

import mlx.core as mx
import numpy as np
import pytest

from engine.train.safetensors_write import write_safetensors


def test_numpy_and_mx_arrays_load_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "params": rng.standard_normal(1001).astype(np.float32),
        "m": rng.standard_normal((3, 7)).astype(np.float32)[:, ::2],  # not contiguous
        "ids": np.arange(5, dtype=np.int32),
        "w16": mx.array(rng.standard_normal((4, 6)).astype(np.float32)).astype(mx.bfloat16),
        "h": mx.array(rng.standard_normal(9).astype(np.float16)),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": mx.array(3, mx.int32),  # 0-d stays 0-d
    }
    path = tmp_path / "s.safetensors"
    sha, tensors = write_safetensors(path, arrays, {"format": "mlx"})
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert tensors["w16"] == ([4, 6], "BF16") and tensors["m"] == ([3, 4], "F32")
    assert tensors["scalar"] == ([], "I32")
    back, meta = mx.load(str(path), return_metadata=True)
    assert meta == {"format": "mlx"}
    for name, a in arrays.items():
        assert back[name].dtype == (a.dtype if isinstance(a, mx.array) else mx.array(a).dtype)
        assert np.array_equal(np.array(back[name].astype(mx.float32)),
                              np.array(mx.array(a).astype(mx.float32))), name  # fmt: skip
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    assert n % 8 == 0 and header["ids"]["dtype"] == "I32"
    assert len(raw) == 8 + n + max(end for k, t in header.items() if k != "__metadata__"
                                   for end in t["data_offsets"])  # fmt: skip


def test_the_reference_reader_agrees(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    arrays = {
        "a": np.linspace(0, 1, 17, dtype=np.float32),
        "b": np.arange(6, dtype=np.int64).reshape(2, 3),
    }
    path = tmp_path / "r.safetensors"
    write_safetensors(path, arrays)
    back = st.load_file(str(path))
    for name, a in arrays.items():
        np.testing.assert_array_equal(back[name], a)


def test_a_dtype_it_cannot_write_is_named_and_nothing_is_written(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(ValueError, match="complex64"):
        write_safetensors(path, {"z": np.zeros(2, np.complex64)})
    assert not path.exists()
