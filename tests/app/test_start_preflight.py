"""Start asks the preflight first (off the GUI thread): a run that won't fit, or a dataset
with errors, never starts a worker; each fix that fits is a button that sets the controls."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtWidgets import QPushButton

from app.widgets.controls import NumberControl


def _control(window, section: str, name: str) -> NumberControl:
    return next(c for c in window.training_page.findChildren(NumberControl)
                if (c.section, c.name) == (section, name))  # fmt: skip


def test_a_run_that_wont_fit_is_refused_and_a_fix_is_one_click(window, qtbot, tmp_path: Path):
    window.job.set("run", "batch_size", 10000)  # issue 11: "won't fit: 2 × 365 GiB", yet it ran
    window.start_button.click()
    panel = window.training_page.preflight
    qtbot.waitUntil(panel.isVisible, timeout=60_000)
    assert not window.runner.running and window.start_button.isEnabled()
    assert window.stack.currentWidget() is window.training_page
    assert "won't fit on this machine" in panel.text()
    assert not (tmp_path / "runs").exists()  # no run folder, so no worker either
    buttons = [b for b in panel.findChildren(QPushButton) if b.text().startswith("Apply: ")]
    accum = next(b for b in buttons if b.text().startswith("Apply: Gradient accumulation"))
    accum.click()
    spin = _control(window, "run", "grad_accum").spin
    assert spin.value() == window.job.spec.run.grad_accum > 1  # the control shows it
    assert window.job.spec.run.batch_size == 10000  # the same global batch
    assert panel.text().startswith("Applied: Gradient accumulation")


def test_dataset_errors_are_refused_by_line(window, qtbot, tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "Hi", "output": "Hello"}) + "\n{oops\n")
    window.job.set("data", "path", str(bad))
    window.start_run()
    panel = window.training_page.preflight
    qtbot.waitUntil(panel.isVisible, timeout=60_000)
    assert f"{bad}:2" in panel.text() and not window.runner.running
    assert not [b for b in panel.findChildren(QPushButton) if b.text().startswith("Apply: ")]


def test_the_runs_folder_is_a_full_path_remembered_by_the_app(window, settings, tmp_path):
    page = window.training_page
    window.go_to(page)
    assert not page.set_runs_folder("runs")  # relative: refused, with the reason
    assert "Runs folder: expected a full path" in page.banner.text()
    assert window.job.spec.run.out_dir == str(tmp_path / "runs")
    chosen = tmp_path / "elsewhere" / "runs"
    assert page.set_runs_folder(str(chosen))
    assert window.job.spec.run.out_dir == str(chosen) == page.runs_folder.text()
    assert settings.runs_folder() == str(chosen)
    other = window.job.snapshot()
    other.run.out_dir = "runs"  # as a job file written elsewhere may say
    window.job.replace(other)  # opened: a relative folder becomes the app's runs folder
    assert window.job.spec.run.out_dir == str(chosen) == page.runs_folder.text()
    other.run.out_dir = str(tmp_path / "named")  # a full path in the job file is kept
    window.job.replace(other)
    assert page.runs_folder.text() == str(tmp_path / "named")


def test_settings_are_written_off_the_gui_thread(tmp_path) -> None:
    """A value set is read back at once and reaches the file from a writer thread: a QSettings
    changed on the GUI thread would write (and fsync) from the event loop."""
    import threading

    from PySide6.QtCore import QSettings

    from app.settings import AppSettings

    path = str(tmp_path / "settings.ini")
    settings = AppSettings(QSettings(path, QSettings.Format.IniFormat))
    writers: list[threading.Thread] = []
    open_writer = settings._open_writer
    settings._open_writer = lambda: writers.append(threading.current_thread()) or open_writer()
    settings.add_recent("datasets", "/data/a.jsonl")
    settings.set_value("window/geometry", b"\x01\x02")
    assert settings.recent("datasets") == ["/data/a.jsonl"]
    assert settings.sync(10)
    assert writers and threading.main_thread() not in writers
    assert "/data/a.jsonl" in (tmp_path / "settings.ini").read_text()
    settings.clear_recent("datasets")
    assert settings.recent("datasets") == []
    assert settings.sync(10)
    later = AppSettings(QSettings(path, QSettings.Format.IniFormat))  # the next launch
    assert later.recent("datasets") == [] and later.value("window/geometry") == b"\x01\x02"
