"""Real wheel and keyboard input: the wheel scrolls pages; fields refuse bad values and say why."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from engine.config import ConfigError, JobSpec
from tests.app.real_input import controls, focus, type_into, wheel


def test_the_wheel_scrolls_the_page_not_the_control_under_it(window, qtbot) -> None:
    page = window.training_page
    window.go_to(page)
    qtbot.wait(50)
    bar = page.scroll_area.verticalScrollBar()
    assert bar.maximum() > 0, "the Training page should be taller than the window"
    before = JobSpec.from_dict(window.job.spec.to_dict())
    lr, batch = page.lr, controls(window)[("run", "batch_size")]

    wheel(window, lr.slider)  # over the learning-rate slider
    assert window.job.spec.optim.learning_rate == before.optim.learning_rate
    assert bar.value() > 0, "the page did not scroll"
    page.scroll_area.ensureWidgetVisible(batch.spin)
    scrolled = bar.value()
    wheel(window, batch.spin)  # over the batch size box
    wheel(window, page.schedule)  # over the schedule combo box
    assert window.job.spec.run.batch_size == before.run.batch_size
    assert window.job.spec.optim.schedule == before.optim.schedule
    assert bar.value() != scrolled

    # Once the user clicks into a control, the wheel is theirs for that control.
    page.scroll_area.ensureWidgetVisible(batch.spin)
    focus(qtbot, window, batch.spin.lineEdit())
    wheel(window, batch.spin, notches=1)
    assert window.job.spec.run.batch_size == before.run.batch_size + 1


def test_out_of_range_values_are_refused_with_the_reason(window, qtbot) -> None:
    window.go_to(window.model_page)
    fields = controls(window)
    rank, alpha = fields[("lora", "rank")], fields[("lora", "alpha")]
    window.model_page.scroll_area.ensureWidgetVisible(rank)

    type_into(qtbot, window, rank, "0")
    assert window.job.spec.lora.rank == 8  # not turned back into anything silently...
    assert rank.spin.value() == 0  # ...what was typed stays, marked as refused
    assert rank.note.isVisible() and "0 is below the minimum, 1" in rank.note.text()
    assert "The job keeps 8" in rank.note.text()
    with pytest.raises(ConfigError, match="lora.rank: 0 is below the minimum"):
        window.job.snapshot()
    window.start_run()
    assert not window.runner.running and "lora.rank" in window.banner.text()

    type_into(qtbot, window, rank, "12")
    assert window.job.spec.lora.rank == 12 and not rank.note.isVisible()
    window.job.snapshot()  # nothing refused any more

    window.go_to(window.training_page)
    batch = fields[("run", "batch_size")]
    window.training_page.scroll_area.ensureWidgetVisible(batch)
    type_into(qtbot, window, batch, "100000")
    assert window.job.spec.run.batch_size == 8  # not cut to 10000 or 65536
    assert "100,000 is above the maximum, 65,536" in batch.note.text()

    # Alpha 0 is allowed by the config but makes an adapter with no effect: a clear warning.
    window.go_to(window.model_page)
    window.model_page.scroll_area.ensureWidgetVisible(alpha)
    type_into(qtbot, window, alpha, "0")
    assert window.job.spec.lora.alpha == 0.0 and not alpha.refused
    assert alpha.note.isVisible() and "changes nothing" in alpha.note.text()

    # The arrows stop at the field's limits instead of going past them.
    window.job.set("lora", "rank", 1024)
    rank.spin.setFocus()
    QTest.keyClick(rank.spin, Qt.Key.Key_Up)
    assert rank.spin.value() == 1024 and not rank.refused


def test_layers_out_of_range_are_refused_next_to_the_field(window, qtbot) -> None:
    page = window.model_page
    page.layers.setText("0-9")
    page.layers.editingFinished.emit()
    assert window.job.spec.lora.layers == []
    assert "this model has layers 0–4" in page.layers_hint.text()
    assert page.layers.text() == "0-9"  # kept, to be corrected
    page.layers.setText("0-2")
    page.layers.editingFinished.emit()
    assert window.job.spec.lora.layers == [0, 1, 2] and "Not used" not in page.layers_hint.text()
