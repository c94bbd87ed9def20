"""Atomic checkpoints: manifest checks, fallback past a damaged one, rotation."""

import json

import mlx.core as mx
import numpy as np
import pytest

from engine.train import CheckpointError, list_checkpoints, load_latest_checkpoint, save_checkpoint


def _save(run, step, value, keep=3):
    arrays = {"param.w": mx.full((2, 3), float(value)), "adam_step": mx.array(step)}
    return save_checkpoint(run, step, arrays, {"seed": 1}, "[run]\nsteps = 9\n", keep=keep)


def test_round_trip_and_latest_pointer(tmp_path):
    _save(tmp_path, 10, 1.0)
    _save(tmp_path, 20, 2.0)
    ck = load_latest_checkpoint(tmp_path, {"param.w": (2, 3)})
    assert ck.step == 20 and ck.meta["seed"] == 1 and "steps = 9" in ck.job_toml
    np.testing.assert_array_equal(np.array(ck.arrays["param.w"]), 2.0)
    assert not list(tmp_path.glob("checkpoints/*.tmp"))


def test_damaged_latest_falls_back_to_previous(tmp_path):
    _save(tmp_path, 10, 1.0)
    latest = _save(tmp_path, 20, 2.0)
    data = bytearray((latest / "state.safetensors").read_bytes())
    data[-1] ^= 0xFF  # flip bits in the tensor data
    (latest / "state.safetensors").write_bytes(bytes(data))
    ck = load_latest_checkpoint(tmp_path)
    assert ck.step == 10
    np.testing.assert_array_equal(np.array(ck.arrays["param.w"]), 1.0)


def test_torn_write_and_missing_manifest_are_skipped(tmp_path):
    _save(tmp_path, 10, 1.0)
    # a crash mid-write leaves a .tmp directory and no pointer change
    torn = tmp_path / "checkpoints" / "step_0000020.tmp"
    torn.mkdir()
    (torn / "state.safetensors").write_bytes(b"partial")
    assert load_latest_checkpoint(tmp_path).step == 10
    # a directory without a manifest is not trusted either
    bad = tmp_path / "checkpoints" / "step_0000030"
    bad.mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("step_0000030\n")
    assert load_latest_checkpoint(tmp_path).step == 10


def test_shape_mismatch_is_named(tmp_path):
    _save(tmp_path, 10, 1.0)
    with pytest.raises(CheckpointError, match=r"param.w.*\(4, 4\)"):
        load_latest_checkpoint(tmp_path, {"param.w": (4, 4)})
    with pytest.raises(CheckpointError, match="no checkpoints"):
        load_latest_checkpoint(tmp_path / "elsewhere")


def test_keep_rotates_and_manifest_lists_hashes(tmp_path):
    for s in (1, 2, 3, 4):
        _save(tmp_path, s, s, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000004", "step_0000003"]
    manifest = json.loads((list_checkpoints(tmp_path)[0] / "manifest.json").read_text())
    assert set(manifest["files"]) == {"state.safetensors", "meta.json", "job.toml"}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert manifest["shapes"]["param.w"][0] == [2, 3]
