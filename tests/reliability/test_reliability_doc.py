"""docs/reliability.md cannot drift: every test its table names exists (found by AST), every
status is one of the three words, and every test in tests/reliability is in the table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
STATUSES = ("proven", "partial", "not yet built")


def _rows() -> list[list[str]]:
    """The scenario table's data rows, as lists of cells."""
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("|") and not line.startswith("|---") and not line.startswith("| #"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        n.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test")
    }


def test_every_named_test_exists():
    rows = _rows()
    assert len(rows) >= 17
    missing = []
    for row in rows:
        for path, name in NAMED.findall(row[3]):
            file = ROOT / path
            if not file.is_file() or name not in _test_functions(file):
                missing.append(f"row {row[0]}: {path}::{name}")
    assert missing == [], "docs/reliability.md names tests that do not exist"


def test_every_row_has_a_status_and_proven_rows_name_a_test():
    for row in _rows():
        assert len(row) == 5, row
        assert row[4].startswith(STATUSES), f"row {row[0]}: status {row[4]!r}"
        if row[4].startswith("proven"):
            assert NAMED.search(row[3]), f"row {row[0]} is proven by no named test"


def test_every_reliability_test_is_in_the_table():
    named = {(p, n) for row in _rows() for p, n in NAMED.findall(row[3])}
    here = Path(__file__).parent
    for file in sorted(here.glob("test_*.py")):
        if file.name == Path(__file__).name:
            continue
        rel = str(file.relative_to(ROOT))
        for name in sorted(_test_functions(file)):
            assert (rel, name) in named, f"{rel}::{name} is not in docs/reliability.md"
