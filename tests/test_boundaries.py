"""The design's import rules, checked on every file (not by hope)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            # resolve relative imports against the file's package
            pkg = path.relative_to(ROOT).with_suffix("").parts[: -node.level]
            names.add(".".join(pkg + ((node.module,) if node.module else ())))
    return names


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _violations(folder: str, banned: tuple[str, ...]) -> list[str]:
    out = []
    for f in _files(folder):
        for name in _imports(f):
            if any(name == b or name.startswith(b + ".") for b in banned):
                out.append(f"{f.relative_to(ROOT)} imports {name}")
    return out


@pytest.mark.parametrize(
    "folder, banned",
    [
        ("engine", ("app", "PySide6", "pyqtgraph", "shiboken6")),
        ("engine/discovery", ("grpc", "engine.rpc")),
        ("engine/trust", ("grpc", "engine.rpc")),
        ("engine/optim", ("engine.dist", "engine.rpc", "grpc")),
        ("engine/data", ("engine.rpc", "grpc", "engine.dist")),
    ],
)
def test_import_boundaries(folder: str, banned: tuple[str, ...]) -> None:
    assert _violations(folder, banned) == []


def test_only_rpc_imports_grpc() -> None:
    offenders = [
        v for v in _violations("engine", ("grpc", "grpc_health")) if not v.startswith("engine/rpc/")
    ]
    assert offenders == []


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    # The checker itself must be able to fail.
    bad = ROOT / "engine" / "_boundary_probe.py"
    bad.write_text("import PySide6\n")
    try:
        assert _violations("engine", ("PySide6",)) == ["engine/_boundary_probe.py imports PySide6"]
    finally:
        bad.unlink()
