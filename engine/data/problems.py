"""Dataset problems: where (file, line, column, field) and what, at error or warning level.

Every fault in a dataset becomes a ``Problem``; nothing in engine/data raises for bad input
except ``prepare_data``, which raises one ``DatasetError`` carrying all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One fault. ``line``/``column`` are 1-based; None when they do not apply."""

    file: str
    line: int | None
    column: int | None
    field: str | None
    message: str
    level: str = ERROR

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )

    @property
    def is_error(self) -> bool:
        return self.level == ERROR


@dataclass
class ProblemLog:
    """Keeps the first ``limit`` problems and counts every one (so a report can say how many more)."""

    limit: int = 50
    kept: list[Problem] = field(default_factory=list)
    errors: int = 0
    warnings: int = 0

    def add(self, problem: Problem) -> None:
        if problem.is_error:
            self.errors += 1
        else:
            self.warnings += 1
        if len(self.kept) < self.limit:
            self.kept.append(problem)

    def error(
        self,
        file: str,
        line: int | None,
        message: str,
        *,
        column: int | None = None,
        field: str | None = None,
    ) -> None:
        self.add(Problem(file, line, column, field, message, ERROR))

    def warning(
        self,
        file: str,
        line: int | None,
        message: str,
        *,
        column: int | None = None,
        field: str | None = None,
    ) -> None:
        self.add(Problem(file, line, column, field, message, WARNING))

    @property
    def total(self) -> int:
        return self.errors + self.warnings

    @property
    def more(self) -> int:
        """Problems counted but not kept."""
        return self.total - len(self.kept)

    def lines(self) -> list[str]:
        out = [f"{p.level}: {p}" for p in self.kept]
        if self.more:
            out.append(
                f"... and {self.more} more problems "
                f"({self.errors} errors and {self.warnings} warnings in all)"
            )
        return out


class DatasetError(ValueError):
    """The data cannot be trained on. ``problems`` lists the kept problems; ``log`` counts all."""

    def __init__(self, log: ProblemLog):
        self.log = log
        self.problems = list(log.kept)
        head = f"{log.errors} dataset error{'s' if log.errors != 1 else ''}"
        super().__init__("\n".join([head, *log.lines()]))
