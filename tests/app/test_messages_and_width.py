"""Long messages never widen the window; a message belongs to its page and goes once fixed."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from engine.events import StateEvent

# What a worker's gRPC error looked like: one unbroken hashed cache path, far wider than a screen.
LONG_WORD = "/home/user/.orchard/cache/" + "3f9a1c" * 300 + "/train.npz"
LONG_MESSAGE = f"worker 127.0.0.1:50051 failed: StatusCode.INTERNAL: cannot read {LONG_WORD}\n" * 4


def settle(qtbot) -> None:
    qtbot.wait(50)  # let queued layout requests run


def test_long_messages_never_widen_the_window(window, qtbot, tmp_path: Path) -> None:
    window.resize(1200, 820)
    settle(qtbot)
    # Everything that shows text it did not write: page banners, the run state, a dataset and
    # a model that fail to read (real engine errors that quote the long path).
    for page in window.pages:
        window.show_message(LONG_MESSAGE, "error", page)
    window.monitor_page.on_state(StateEvent("failed", LONG_MESSAGE, str(tmp_path / LONG_WORD)))
    missing = tmp_path / ("deep" + "x" * 400) / "data.jsonl"
    with qtbot.waitSignal(window.dataset_page.message, timeout=30_000):
        window.dataset_page.open_path(str(missing))
    with qtbot.waitSignal(window.model_page.message, timeout=30_000):
        window.job.set("model", "path", str(tmp_path / ("model" + "y" * 400)))
    window.results_page.show_adapter(str(tmp_path / LONG_WORD / "adapter"), "demo", [])
    for page in window.pages:
        window.go_to(page)
        settle(qtbot)
        assert window.width() == 1200, f"{type(page).__name__} widened the window"
    assert window.minimumSizeHint().width() < 1000
    window.resize(900, 700)  # and it can still be made narrower
    settle(qtbot)
    assert window.width() == 900

    # The banner shows a short summary and keeps the whole text behind Details.
    banner = window.banner
    assert banner.text() == LONG_MESSAGE
    assert len(banner.shown_text()) < 400 and "…" in banner.shown_text()
    assert banner.details_button.isVisible() and not banner.details.isVisible()
    QTest.mouseClick(banner.details_button, Qt.MouseButton.LeftButton)
    assert banner.details.isVisible() and banner.details.toPlainText() == LONG_MESSAGE
    assert banner.details.maximumHeight() <= 200  # it scrolls instead of pushing the page down
    assert window.width() == 900


def test_a_message_belongs_to_its_page_and_goes_when_fixed(window, qtbot, tmp_path: Path) -> None:
    model = window.model_page
    window.go_to(model)
    with qtbot.waitSignal(model.message, timeout=30_000):
        model._pick_folder(str(tmp_path / "no-such-model"))
    assert "no-such-model" in window.banner.text()
    window.go_to(window.dataset_page)
    assert window.banner.text() == ""  # the Dataset page has nothing to say
    window.go_to(model)
    assert "no-such-model" in window.banner.text()  # still there, where it belongs

    with qtbot.waitSignal(model.inspected, timeout=30_000):
        model.use_demo.setChecked(True)
    assert window.banner.text() == ""  # fixed: the error went with its cause


def test_dismissing_a_message(window, qtbot) -> None:
    window.show_message("The job has settings to fix", "warning")
    banner = window.banner
    assert banner.isVisible() and not banner.details_button.isVisible()  # short: no details
    close = [b for b in banner.findChildren(type(banner.details_button)) if b.text() == "✕"][0]
    QTest.mouseClick(close, Qt.MouseButton.LeftButton)
    assert banner.text() == "" and not banner.isVisible()
