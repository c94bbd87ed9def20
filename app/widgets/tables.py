"""The read-only, one-row-at-a-time table the pages use for workers, problems and runs."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget


def list_table(columns: Sequence[str], stretch_column: int) -> QTableWidget:
    """Columns fit their contents except ``stretch_column``, which takes the rest."""
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.verticalHeader().setVisible(False)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(stretch_column, QHeaderView.ResizeMode.Stretch)
    return table


def fit_height(table: QTableWidget, max_rows: int = 8) -> None:
    """As tall as its rows (at least one, at most ``max_rows``, then it scrolls)."""
    rows = max(1, min(table.rowCount(), max_rows))
    height = table.horizontalHeader().sizeHint().height() + 2 * table.frameWidth()
    height += sum(table.rowHeight(r) for r in range(min(rows, table.rowCount())))
    height += table.verticalHeader().defaultSectionSize() * max(0, rows - table.rowCount())
    if table.horizontalScrollBar().isVisible():
        height += table.horizontalScrollBar().height()
    table.setFixedHeight(height)
