"""Adapters round-trip through mlx-lm's own loader: same logits as Orchard's in-memory model."""

from __future__ import annotations

import json

import mlx.core as mx
import mlx_lm
import pytest
from mlx.utils import tree_flatten
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import save_config

from engine.config import JobSpec, LoraSpec, ModelSpec
from engine.lora import LoraError, apply_lora, fuse_adapter, load_adapter, lora_report, save_adapter
from engine.model import load_model

from .conftest import PROMPT, STORIES, fused_tol, max_diff, perturb

TOL = 1e-5


def _trained(path: str, lora: LoraSpec, biases: bool = False):
    """Orchard's in-memory model after 'training' (random lora_b, optionally moved biases)."""
    loaded = load_model(ModelSpec(path=path))
    apply_lora(loaded.model, lora, seed=0)
    perturb(loaded.model, biases=biases)
    loaded.model.eval()
    return loaded


def _job(lora: LoraSpec, **model) -> JobSpec:
    job = JobSpec()
    job.lora = lora
    for k, v in model.items():
        setattr(job.model, k, v)
    return job


@pytest.mark.parametrize(
    "layers", [[], [3, 4], [0, 2], [1, 3]], ids=["all", "suffix", "0+2", "1+3"]
)
def test_mlx_lm_load_reproduces_orchard(tmp_path, layers):
    lora = LoraSpec(
        rank=4, alpha=8.0, target_modules=["q_proj", "v_proj", "down_proj"], layers=layers
    )
    loaded = _trained(str(STORIES), lora)
    expected = loaded.model(PROMPT)
    save_adapter(loaded.model, tmp_path, _job(lora), str(STORIES))

    model, _ = mlx_lm.load(str(STORIES), adapter_path=str(tmp_path))
    assert max_diff(model(PROMPT), expected) <= TOL

    config = json.loads((tmp_path / "adapter_config.json").read_text())
    first = min(layers) if layers else 0
    assert config["fine_tune_type"] == "lora" and config["model"] == str(STORIES)
    assert config["num_layers"] == 5 - first
    assert config["lora_parameters"] == {
        "rank": 4, "scale": 2.0, "dropout": 0.0,
        "keys": ["mlp.down_proj", "self_attn.q_proj", "self_attn.v_proj"],
    }  # fmt: skip
    saved = mx.load(str(tmp_path / "adapters.safetensors"))
    chosen = layers or list(range(5))
    for name, w in saved.items():
        layer = int(name.split(".")[2])
        assert layer >= first
        if layer not in chosen:  # padding inside the suffix: an exact no-op
            assert not mx.any(w).item()

    fresh = load_model(ModelSpec(path="demo")).model
    report = load_adapter(fresh, tmp_path)
    fresh.eval()
    assert report.layers == chosen  # Orchard rebuilds only the chosen layers, not the padding
    assert max_diff(fresh(PROMPT), expected) <= TOL


def test_trained_biases(tmp_path, qwen_dir):
    """bias='all': Orchard reloads them, mlx-lm loads the LoRA part, the fused model has both."""
    lora = LoraSpec(rank=4, target_modules=["q_proj", "o_proj"], layers=[0, 2], bias="all")
    loaded = _trained(str(qwen_dir), lora, biases=True)
    expected = loaded.model(PROMPT)
    loaded.model.freeze()  # biases are saved by the job's bias mode, not by trainability
    adapter = save_adapter(loaded.model, tmp_path / "adapter", _job(lora), str(qwen_dir))
    assert (adapter / "trained_biases.safetensors").exists()

    fresh = load_model(ModelSpec(path=str(qwen_dir))).model
    report = load_adapter(fresh, adapter)
    fresh.eval()
    assert max_diff(fresh(PROMPT), expected) <= TOL
    assert len(report.trainable_biases) == 12  # q, k, v biases of four layers

    # mlx-lm refuses non-LoRA tensors in an adapter file, so the biases are not in it: it
    # must load cleanly and give exactly "base biases + the LoRA"
    lora_only = load_model(ModelSpec(path=str(qwen_dir))).model
    apply_lora(lora_only, lora, seed=0)
    lora_only.load_weights(
        list(mx.load(str(adapter / "adapters.safetensors")).items()), strict=False
    )
    lora_only.eval()
    model, _ = mlx_lm.load(str(qwen_dir), adapter_path=str(adapter))
    assert max_diff(model(PROMPT), lora_only(PROMPT)) <= TOL
    assert max_diff(model(PROMPT), expected) > 1e-3  # the biases did matter

    fused = fuse_adapter(adapter, tmp_path / "fused")
    model, _ = mlx_lm.load(str(fused))
    assert max_diff(model(PROMPT), expected) <= fused_tol(expected)


def test_adapter_written_by_mlx_lm_loads_in_orchard(tmp_path):
    model, _ = mlx_lm.load(str(STORIES))
    model.freeze()
    params = {"rank": 4, "scale": 10.0, "dropout": 0.0, "keys": ["self_attn.k_proj", "mlp.up_proj"]}
    linear_to_lora_layers(model, 2, params)
    perturb(model)
    model.eval()
    mx.save_safetensors(
        str(tmp_path / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters()))
    )
    save_config({"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": params, "model": str(STORIES)}, tmp_path / "adapter_config.json")  # fmt: skip
    fresh = load_model(ModelSpec(path="demo")).model
    report = load_adapter(fresh, tmp_path)
    fresh.eval()
    assert report.layers == [3, 4]
    assert max_diff(fresh(PROMPT), model(PROMPT)) <= TOL


def test_qlora_adapter_fuses_into_a_model_mlx_lm_loads(tmp_path):
    lora = LoraSpec(rank=4, target_modules=["q_proj", "down_proj"], layers=[1, 4])
    loaded = load_model(ModelSpec(path="demo", quantize=True, group_size=32))
    apply_lora(loaded.model, lora, seed=0)
    perturb(loaded.model)
    loaded.model.eval()
    expected = loaded.model(PROMPT)
    adapter = save_adapter(
        loaded.model, tmp_path / "a", _job(lora, quantize=True, group_size=32), str(STORIES)
    )
    assert json.loads((adapter / "adapter_config.json").read_text())["orchard"]["quantize"] == {
        "bits": 4, "group_size": 32,
    }  # fmt: skip

    exact = fuse_adapter(adapter, tmp_path / "float", dequantize=True)
    model, _ = mlx_lm.load(str(exact))
    assert max_diff(model(PROMPT), expected) <= 1e-4 * mx.abs(expected).max().item()

    packed = fuse_adapter(adapter, tmp_path / "q4")  # re-quantized: small, but not exact
    config = json.loads((packed / "config.json").read_text())
    assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 32
    model, _ = mlx_lm.load(str(packed))
    assert max_diff(model(PROMPT), expected) < 0.2 * mx.abs(expected).max().item()


def test_save_needs_lora_and_load_names_the_fault(tmp_path, qwen_dir):
    plain = load_model(ModelSpec(path="demo")).model
    with pytest.raises(LoraError, match="no LoRA layers"):
        save_adapter(plain, tmp_path / "x", JobSpec(), "demo")
    with pytest.raises(LoraError, match="no such adapter folder"):
        load_adapter(plain, tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoraError, match="expected adapter_config.json and adapters.safetensors"):
        load_adapter(plain, tmp_path / "empty")

    loaded = _trained(str(STORIES), LoraSpec(rank=4))
    adapter = save_adapter(loaded.model, tmp_path / "a", JobSpec(), str(STORIES))
    qwen = load_model(ModelSpec(path=str(qwen_dir))).model
    with pytest.raises(LoraError, match="does not fit this model"):
        load_adapter(qwen, adapter)
    (adapter / "adapter_config.json").write_text('{"fine_tune_type": "lora",\n "num_layers": }')
    with pytest.raises(LoraError, match=r"adapter_config.json:2:\d+: not valid JSON"):
        load_adapter(plain, adapter)
    (adapter / "adapter_config.json").write_text('{"fine_tune_type": "full", "num_layers": 2}')
    with pytest.raises(LoraError, match="fine_tune_type: expected one of lora, dora, got 'full'"):
        load_adapter(plain, adapter)


def test_saving_again_after_training_more_overwrites(tmp_path):
    lora = LoraSpec(rank=4, layers=[2])
    loaded = _trained(str(STORIES), lora)
    save_adapter(loaded.model, tmp_path, _job(lora), str(STORIES))
    perturb(loaded.model, seed=9)
    save_adapter(loaded.model, tmp_path, _job(lora), str(STORIES))
    model, _ = mlx_lm.load(str(STORIES), adapter_path=str(tmp_path))
    assert max_diff(model(PROMPT), loaded.model(PROMPT)) <= TOL
    assert not list(tmp_path.glob("*.tmp*"))
    assert lora_report(loaded.model).layers == [2]


def test_dora_adapter_loads_in_mlx_lm_and_orchard_and_fuses(tmp_path):
    """lora.type = "dora" on a non-suffix choice: mlx_lm.load (fine_tune_type "dora", the
    magnitudes m) gives the same logits; Orchard reloads it; the fused model matches."""
    lora = LoraSpec(rank=4, alpha=8.0, target_modules=["q_proj", "down_proj"], layers=[1, 3],
                    type="dora")  # fmt: skip
    loaded = _trained(str(STORIES), lora)
    expected = loaded.model(PROMPT)
    save_adapter(loaded.model, tmp_path / "a", _job(lora), "demo")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "dora" and config["num_layers"] == 4
    saved = mx.load(str(tmp_path / "a" / "adapters.safetensors"))
    assert "model.layers.1.self_attn.q_proj.m" in saved
    model, _ = mlx_lm.load(str(STORIES), adapter_path=str(tmp_path / "a"))
    assert max_diff(model(PROMPT), expected) <= TOL
    fresh = load_model(ModelSpec(path="demo")).model
    assert load_adapter(fresh, tmp_path / "a").kind == "dora"
    fresh.eval()
    assert max_diff(fresh(PROMPT), expected) <= TOL
    fuse_adapter(tmp_path / "a", tmp_path / "fused")
    fused, _ = mlx_lm.load(str(tmp_path / "fused"))
    assert max_diff(fused(PROMPT), expected) <= fused_tol(expected)
