"""Dropping datasets on the window: real QDropEvents, real engine/data reading."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

GOOD = [
    {"instruction": f"Say the number {i}", "output": f"The number is {i}. " * (1 + i % 5)}
    for i in range(40)
]


def drop(window, path: Path) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    enter = QDragEnterEvent(
        QPoint(300, 300),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted(), "the window refused a file drag"
    event = QDropEvent(
        QPointF(300, 300),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(window, event)


def test_drop_loads_file_and_shows_stats(window, qtbot, tmp_path: Path) -> None:
    path = tmp_path / "numbers.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in GOOD) + "\n", encoding="utf-8")
    page = window.dataset_page
    with qtbot.waitSignal(page.loaded, timeout=30_000):
        drop(window, path)
    assert window.stack.currentWidget() is page
    assert window.job.spec.data.path == str(path)
    assert page.view.read.format == "alpaca"
    assert page.stat_labels["format"].text() == "alpaca"
    assert page.stat_labels["records"].text().startswith("train 40")
    assert page.view.stats.records["train"] == 40
    assert sum(page.view.stats.histogram.counts) == 40  # every record is in the histogram
    assert page.bars is not None
    assert page.record_list.count() == 40
    page.record_list.setCurrentRow(3)
    html = page.record_view.toHtml()
    assert "Say the number 3" in html and "The number is 3." in html
    assert page.problem_table.rowCount() == 0


def test_long_records_are_counted_as_truncated(window, qtbot, tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in GOOD) + "\n", encoding="utf-8")
    page = window.dataset_page
    with qtbot.waitSignal(page.loaded, timeout=30_000):
        page.open_path(str(path))
    longest = page.view.stats.max_len
    with qtbot.waitSignal(page.loaded, timeout=30_000):
        window.job.set("data", "max_seq_len", longest - 1)
    assert page.view.stats.truncated >= 1
    assert page.stat_labels["truncated"].text().startswith(f"{page.view.stats.truncated} ")


def test_bad_file_lists_problems_with_lines(window, qtbot, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(r) for r in GOOD[:5]]
    lines[1] = '{"instruction": "broken", "output": '  # line 2: not valid JSON
    lines[3] = json.dumps({"instruction": "no answer"})  # line 4: missing output
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    page = window.dataset_page
    with qtbot.waitSignal(page.loaded, timeout=30_000):
        drop(window, path)
    assert page.tabs.currentIndex() == 1  # problems come to the front
    rows = {
        int(page.problem_table.item(r, 2).text())
        for r in range(page.problem_table.rowCount())
        if page.problem_table.item(r, 2).text()
    }
    assert {2, 4} <= rows
    assert "problem" in page.status.text()
    # Selecting the problem on line 2 shows that line of the file.
    row = next(
        r
        for r in range(page.problem_table.rowCount())
        if page.problem_table.item(r, 2).text() == "2"
    )
    page.problem_table.selectRow(row)
    qtbot.waitUntil(lambda: "broken" in page.problem_source.toPlainText(), timeout=10_000)
    assert window.banner.text() == ""  # problems are shown on the page, not as an error
