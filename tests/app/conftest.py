"""Qt runs offscreen; every window gets its own settings file, output folder and engine folder."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402

from tests.service.engines import isolated_engine_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEMO_DATASET = ROOT / "resources" / "datasets" / "orchard_robot.jsonl"


@pytest.fixture(autouse=True)
def engine_dir(monkeypatch):
    """A short private engine folder per test (a Unix socket path must stay short): no test
    attaches to the user's engine, and any engine a test started is gone afterwards."""
    with isolated_engine_dir(monkeypatch) as folder:
        yield folder


@pytest.fixture(autouse=True)
def gui_thread_collector(qapp):
    """As in the app: cycles are collected on the GUI thread only (app/gc_gui_thread.py); set
    up before and torn down after each test's windows, so their garbage is collected here."""
    from app.gc_gui_thread import GuiThreadCollector

    collector = GuiThreadCollector()
    yield collector
    collector.close()
    collector.deleteLater()


@pytest.fixture
def settings(tmp_path: Path):
    from app.settings import AppSettings

    return AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


def stop_for_teardown(w) -> None:
    """Before pytest-qt closes a window: stop its run, so closing it asks no question (the
    engine folder's teardown ends whatever is still left)."""
    w.runner.stop()
    w.runner.join(60)
    w.runner.detach()


@pytest.fixture
def window(qtbot, settings, tmp_path: Path):
    """The real main window, without Bonjour (tests must not depend on the network)."""
    from app.main_window import MainWindow

    w = MainWindow(settings, discover=False)
    w.job.set("run", "out_dir", str(tmp_path / "runs"))
    qtbot.addWidget(w, before_close_func=stop_for_teardown)
    w.show()
    # The first dataset/model reads run in the background; let them land before a test acts.
    qtbot.waitUntil(
        lambda: w.model_page.info is not None and w.dataset_page.view is not None, timeout=30_000
    )
    yield w
