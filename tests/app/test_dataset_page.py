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


def test_long_path_is_elided_stats_stay_and_duplicates_are_listed(
    window, qtbot, tmp_path: Path
) -> None:
    folder = tmp_path.joinpath(*[f"a-long-folder-name-{i}-" * 4 for i in range(8)])
    folder.mkdir(parents=True)
    path = folder / "with_duplicates.jsonl"
    rows = [json.dumps(r) for r in GOOD[:6]]
    rows.insert(3, rows[1])  # line 4 repeats line 2
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    page = window.dataset_page
    width = window.width()
    with qtbot.waitSignal(page.loaded, timeout=30_000):
        drop(window, path)
    qtbot.wait(50)
    assert window.width() == width and page.scroll_area.horizontalScrollBar().maximum() == 0
    assert page.path_label.full_text() == str(path) and page.path_label.toolTip() == str(path)
    assert "…" in page.path_label.text() and page.path_label.text().endswith(".jsonl")
    for key in ("records", "truncated", "skipped", "duplicates"):
        label = page.stat_labels[key]
        assert label.isVisible() and not label.visibleRegion().isEmpty(), key
    assert page.stat_labels["duplicates"].text().startswith("1 exact (see Problems)")
    assert page.stat_labels["skipped"].text().startswith("0 ")
    # The duplicate is a warning under Problems, naming the record it repeats.
    row = next(
        r
        for r in range(page.problem_table.rowCount())
        if page.problem_table.item(r, 2).text() == "4"
    )
    assert page.problem_table.item(row, 0).text() == "warning"
    assert page.problem_table.item(row, 5).text() == "exact duplicate of line 2"
    assert page.tabs.tabText(1) == "Problems (1)"


def test_an_empty_histogram_has_a_plain_axis(window, qtbot, tmp_path: Path) -> None:
    path = tmp_path / "all_bad.jsonl"
    path.write_text('{"instruction": "no answer"}\n{"broken": \n', encoding="utf-8")
    page = window.dataset_page
    with qtbot.waitSignal(page.loaded, timeout=30_000):
        page.open_path(str(path))
    (_x0, _x1), (y0, y1) = page.histogram.getPlotItem().vb.viewRange()
    assert (y0, y1) == (0, 1)


def test_recent_datasets_menu_and_remembered_folder(
    window, qtbot, tmp_path: Path, monkeypatch
) -> None:
    from PySide6.QtWidgets import QFileDialog

    first, second = tmp_path / "one" / "first.jsonl", tmp_path / "two" / "second.jsonl"
    for path in (first, second):
        path.parent.mkdir()
        path.write_text("\n".join(json.dumps(r) for r in GOOD[:4]) + "\n", encoding="utf-8")
    asked: list[str] = []

    def pick(_parent, _title, folder, _filter):
        asked.append(folder)
        return str(first if len(asked) == 1 else second), ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", pick)
    page = window.dataset_page
    with qtbot.waitSignal(page.loaded, timeout=30_000):
        page.ask_file()
    with qtbot.waitSignal(page.loaded, timeout=30_000):
        page.ask_file()
    assert asked[1] == str(first.parent)  # the dialog opened where the last pick was

    menu = window.recent_menu
    menu.aboutToShow.emit()
    names = [a.text() for a in menu.actions() if a.text()]
    assert names[:2] == ["second.jsonl", "first.jsonl"]
    window.go_to(window.cluster_page)
    with qtbot.waitSignal(page.loaded, timeout=30_000):
        menu.actions()[1].trigger()
    assert window.job.spec.data.path == str(first)
    assert window.stack.currentWidget() is page
