"""Controls write the one JobSpec; a saved TOML loads back to the same job and the same controls."""

from __future__ import annotations

import math
from pathlib import Path

from PySide6.QtCore import Qt

from app.widgets.controls import SLIDER_STEPS
from engine.config import JobSpec


def test_controls_produce_the_job_and_toml_round_trips(window, qtbot, tmp_path: Path) -> None:
    model, training = window.model_page, window.training_page
    rank = model.findChild(type(training.lr), None)  # any NumberControl; pick rank explicitly below
    assert rank is not None
    controls = {(c.section, c.name): c for c in window.findChildren(type(training.lr))}

    controls[("lora", "rank")].spin.setValue(16)
    controls[("lora", "alpha")].slider.setValue(SLIDER_STEPS)  # slider end = top of its range
    controls[("lora", "dropout")].spin.setValue(0.05)
    training.lr.spin.setValue(3e-4)
    training.schedule.setCurrentIndex(training.schedule.findData("linear"))
    controls[("optim", "warmup_steps")].spin.setValue(10)
    controls[("run", "batch_size")].spin.setValue(4)
    controls[("run", "steps")].spin.setValue(30)
    training.mode.setCurrentIndex(training.mode.findData("reduce-scatter"))
    model.module_checks["mlp.down_proj"].setChecked(True)
    model.module_checks["self_attn.k_proj"].setChecked(False)
    model.layers.setText("0-2, 4")
    model.layers.editingFinished.emit()

    spec = window.job.spec
    assert spec.lora.rank == 16
    assert spec.lora.alpha == controls[("lora", "alpha")].shi
    assert math.isclose(spec.lora.dropout, 0.05)
    assert math.isclose(spec.optim.learning_rate, 3e-4)
    assert spec.optim.schedule == "linear"
    assert spec.optim.warmup_steps == 10
    assert spec.run.batch_size == 4 and spec.run.steps == 30
    assert spec.dist.mode == "reduce-scatter"
    assert sorted(spec.lora.target_modules) == ["down_proj", "o_proj", "q_proj", "v_proj"]
    assert spec.lora.layers == [0, 1, 2, 4]
    # the slider follows the spin box
    assert controls[("lora", "rank")].slider.value() == controls[("lora", "rank")]._to_pos(16)
    # the schedule preview follows the job (linear: ends at min_lr_ratio * peak)
    ys = training.curve.getData()[1]
    assert math.isclose(ys[-1], 3e-4 * spec.optim.min_lr_ratio, rel_tol=1e-6)

    path = tmp_path / "job.toml"
    with qtbot.waitSignal(training.job_saved, timeout=10_000):
        training.save_job(str(path))
    loaded = JobSpec.load(path)
    assert loaded == spec

    # Reset to defaults, then open the file: the job and the controls come back.
    window.job.replace(JobSpec())
    assert controls[("lora", "rank")].spin.value() == JobSpec().lora.rank
    with qtbot.waitSignal(training.job_loaded, timeout=10_000):
        training.open_job(str(path))
    assert window.job.spec == spec
    assert controls[("lora", "rank")].spin.value() == 16
    assert training.mode.currentData() == "reduce-scatter"
    assert model.layers.text() == "0, 1, 2, 4"
    assert not model.module_checks["self_attn.k_proj"].isChecked()


def test_log_slider_lands_on_round_learning_rates(window) -> None:
    lr = window.training_page.lr
    lr.slider.setValue(lr._to_pos(1e-4) + 1)
    value = window.job.spec.optim.learning_rate
    assert f"{value:.2g}" == f"{value}"[: len(f"{value:.2g}")] or value == float(f"{value:.2g}")
    assert 1e-4 <= value <= 1.2e-4
    assert lr.spin.text() == f"{value:.4g}"


def test_bad_job_file_is_a_readable_message(window, qtbot, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[lora]\nrank = 0\nfavourite = 3\n", encoding="utf-8")
    with qtbot.waitSignal(window.training_page.message, timeout=10_000) as blocker:
        window.training_page.open_job(str(path))
    text, level = blocker.args
    assert level == "error"
    assert "lora.favourite" in text and "unknown setting" in text
    assert "Traceback" not in window.banner.text()
    assert window.job.spec.lora.rank == JobSpec().lora.rank


def test_epochs_mode_switches_length_controls(window) -> None:
    training = window.training_page
    training.by_epochs.setChecked(True)
    assert window.job.spec.run.epochs == 1.0
    assert training.epochs.isEnabled() and not training.steps.isEnabled()
    training.by_steps.setChecked(True)
    assert window.job.spec.run.epochs == 0.0


def test_qlora_and_rank_change_the_memory_estimate(window, qtbot) -> None:
    table = window.model_page.memory
    window.model_page.update_estimate()  # the preflight's fits arrive from a pool thread
    qtbot.waitUntil(lambda: table.item(0, 2) is not None, timeout=30_000)
    before = table.item(0, 2).text()
    window.job.set("model", "quantize", True)
    window.job.set("lora", "rank", 64)
    qtbot.waitUntil(lambda: table.item(0, 2).text() != before, timeout=5_000)
    assert table.levels == ["ok"]  # a 260K model fits anywhere
    assert table.item(0, 3).background().color().name() == "#2e7d32"
    assert Qt  # keeps the import used for readers who extend this test
