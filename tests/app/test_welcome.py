"""The first launch says what is ready and what to press; once dismissed it stays away."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest


def test_first_launch_welcome_then_never_again(window, qtbot, settings) -> None:
    from app.main_window import MainWindow

    welcome = window.welcome
    assert welcome is not None and welcome.isVisible()
    assert window.stack.currentWidget() is window.cluster_page
    text = welcome.plain_text()
    assert "Start training" in text and "demo model" in text and "demo dataset" in text
    assert f"{window.job.spec.run.steps} steps" in text
    window.job.set("run", "steps", 12)  # it follows the job
    assert "12 steps" in welcome.plain_text()
    QTest.mouseClick(welcome.close_button, Qt.MouseButton.LeftButton)
    assert not welcome.isVisible()

    again = MainWindow(settings, discover=False)
    qtbot.addWidget(again)
    assert again.welcome is None
