"""load_model through mlx-lm, with clear errors for the folders and ids it cannot use."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import pytest
from mlx_lm.utils import load

from engine.config import ModelSpec
from engine.model import ModelError, inspect_model, load_model

from .conftest import STORIES, tiny_config

ROOT = Path(__file__).resolve().parents[2]
PROMPT = mx.array([[1, 403, 407, 261, 378]])


def test_demo_loads_the_bundled_model_like_mlx_lm():
    loaded = load_model(ModelSpec(path="demo"))
    reference, tokenizer = load(str(STORIES))
    assert loaded.path == STORIES and loaded.quant_report is None
    assert loaded.tokenizer.encode("Once upon a time") == tokenizer.encode("Once upon a time")
    assert mx.array_equal(loaded.model(PROMPT), reference(PROMPT))
    assert loaded.config["model_type"] == "llama"


def test_local_folder_by_path_string():
    loaded = load_model(ModelSpec(path=str(STORIES)))
    assert loaded.model(PROMPT).shape == (1, 5, 512)


def _write(folder: Path, config: dict | None, weights: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if weights:
        (folder / "model.safetensors").write_bytes((STORIES / "model.safetensors").read_bytes())
    return folder


@pytest.mark.parametrize(
    ("config", "weights", "message"),
    [
        (None, True, "no config.json"),
        ({"model_type": "gpt9000"}, True, "model_type: 'gpt9000' is not supported by mlx-lm"),
        (tiny_config("llama"), False, "no weights"),
    ],
)
def test_bad_folders(tmp_path, config, weights, message):
    folder = _write(tmp_path / "m", config, weights)
    with pytest.raises(ModelError, match=message) as err:
        load_model(ModelSpec(path=str(folder)))
    assert str(folder) in str(err.value)


def test_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        load_model(ModelSpec(path=str(tmp_path / "nothing")))
    with pytest.raises(ModelError, match="no such model folder"):
        load_model(ModelSpec(path="./models/nothing/here"))


def test_weights_that_do_not_fit_the_config(tmp_path):
    folder = _write(tmp_path / "m", tiny_config("llama", hidden_size=32), weights=True)
    with pytest.raises(ModelError, match="mlx-lm could not load this model"):
        load_model(ModelSpec(path=str(folder)))


def test_unknown_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 and an empty cache: the message names offline mode and the cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(ModelError, match="'orchard-test/no-such-model' is not in the Hugging Face "
                       r"cache, and offline mode \(HF_HUB_OFFLINE\)"):  # fmt: skip
        load_model(ModelSpec(path="orchard-test/no-such-model"))


def test_invalid_hub_id_is_named():
    with pytest.raises(ModelError, match="not a valid Hugging Face id"):
        load_model(ModelSpec(path="bad name/x y"))


def test_load_tokenizer_alone():
    from engine.model import load_tokenizer

    _, reference = load(str(STORIES))
    assert load_tokenizer("demo").encode("Lily") == reference.encode("Lily")
    with pytest.raises(ModelError, match="no such model folder"):
        load_tokenizer("/nonexistent/tokenizer")


def test_a_truncated_safetensors_file_is_named_before_mlx_reads_it(tmp_path):
    """An interrupted copy: the header is whole, the data is not."""
    import shutil

    folder = tmp_path / "cut"
    shutil.copytree(STORIES, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500_000])
    for call in (lambda: inspect_model(folder), lambda: load_model(ModelSpec(path=str(folder)))):
        with pytest.raises(ModelError, match=r"model.safetensors: truncated: its tensors need 1,044,977 bytes, the file has 500,000"):  # fmt: skip
            call()
