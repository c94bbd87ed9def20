"""check_fit: a job that does not fit the model is named before anything loads."""

from __future__ import annotations

import json
import shutil

from engine.config import JobSpec
from engine.model import inspect_model
from engine.model.fit import check_fit

from .conftest import STORIES

DOWN = "lora.target_modules=['q_proj','down_proj']"


def _problems(path, *overrides):
    return [(p.level, str(p)) for p in check_fit(inspect_model(path), JobSpec().with_overrides(list(overrides)))]  # fmt: skip


def test_the_demo_job_fits():
    assert _problems(STORIES) == []
    assert _problems(STORIES, "model.quantize=true") == []  # q,k,v,o are 64 wide: group 64 fits


def test_a_qlora_group_that_does_not_divide_a_target_is_an_error_naming_the_fix():
    [(level, text)] = _problems(STORIES, "model.quantize=true", "model.group_size=64", DOWN)
    assert level == "error"
    assert text.startswith("model.group_size: 64 does not divide the input width 172 of "
                           "mlp.down_proj, a LoRA target")  # fmt: skip
    assert "no QLoRA group size divides it, or leave mlp.down_proj out" in text


def test_targets_and_layers_the_model_lacks():
    problems = _problems(STORIES, "lora.target_modules=['q_proj','wq']", "lora.layers=[1, 9]")
    assert [lvl for lvl, _ in problems] == ["error", "error"]
    assert "lora.target_modules: 'wq' is not a linear module of this model; choose from: mlp.down_proj" in problems[0][1]  # fmt: skip
    assert problems[1][1] == "lora.layers: [9] out of range; this model has layers 0..4"


def test_a_stored_quantized_model_ignores_other_qlora_settings(quantized_stories):
    problems = _problems(quantized_stories, "model.quantize=true", "model.group_size=64", "lora.type='dora'")  # fmt: skip
    assert [lvl for lvl, _ in problems] == ["warning", "warning"]
    assert "stored quantized (4-bit, group 32); model.bits=4 and model.group_size=64 are ignored" in problems[0][1]  # fmt: skip
    assert problems[1][1].startswith("lora.type: DoRA on a quantized base")


def test_a_model_type_mlx_lm_does_not_support(tmp_path):
    folder = tmp_path / "odd"
    shutil.copytree(STORIES, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "not_a_model"}))
    [(level, text)] = _problems(folder)
    assert level == "error" and "model_type 'not_a_model' is not supported by mlx-lm" in text
