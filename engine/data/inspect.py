"""`orchard inspect-data`: what a dataset holds and what is wrong with it, plus the preview
of one record "as the model will see it" that the app shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.config import resolve_data_path
from engine.data.dataset import read_dataset
from engine.data.problems import ProblemLog
from engine.data.records import Record
from engine.data.stats import DataStats, compute_stats
from engine.data.templates import has_chat_template, turn_end
from engine.data.tokenize import TokenizedSet, tokenize_record, tokenize_records


def preview_record(
    record: Record, tokenizer: Any, mask_prompt: bool = True, max_seq_len: int | None = None
) -> list[tuple[str, bool]]:
    """The record's tokens decoded back to text, in runs of (text, trained)."""
    tokens, weights, _ = tokenize_record(record, tokenizer, mask_prompt)
    if max_seq_len is not None:
        tokens, weights = tokens[:max_seq_len], weights[:max_seq_len]
    ids = tokens.tolist()
    cuts = [0] + [i for i in range(1, len(ids)) if weights[i] != weights[i - 1]] + [len(ids)]
    out: list[tuple[str, bool]] = []
    done = ""
    for a, b in zip(cuts, cuts[1:], strict=False):
        # decode growing prefixes: a lone piece loses its leading space in SentencePiece decoders
        text = tokenizer.decode(ids[:b], skip_special_tokens=False)
        piece = (
            text[len(done) :]
            if text.startswith(done)
            else tokenizer.decode(ids[a:b], skip_special_tokens=False)
        )
        out.append((piece, bool(weights[a])))
        done = text
    return out


@dataclass
class DatasetReport:
    path: str
    format: str | None
    files: dict[str, str]
    problems: ProblemLog
    records: dict[str, int] = field(default_factory=dict)
    stats: DataStats | None = None
    template: str | None = None
    example: list[tuple[str, bool]] | None = None

    @property
    def has_errors(self) -> bool:
        return self.problems.errors > 0

    def format_text(self) -> str:
        lines = [f"dataset: {self.path}", f"format: {self.format or 'unknown'}"]
        lines += [
            f"{split} file: {path} ({self.records.get(split, 0)} valid records)"
            for split, path in self.files.items()
        ]
        if self.template:
            lines.append(f"template: {self.template}")
        if self.stats:
            lines += self.stats.lines()
            h = self.stats.histogram
            lines.append("length histogram (tokens: records):")
            lines += [
                f"  {a:>6}-{b - 1:<6} {c}"
                for a, b, c in zip(h.edges, h.edges[1:], h.counts, strict=False)
                if c
            ]
        if self.example:
            lines.append("first record as the model sees it ([[...]] is trained):")
            lines.append(
                "  " + "".join(f"[[{t}]]" if trained else t for t, trained in self.example)
            )
        verdict = (
            f"{self.problems.errors} errors, {self.problems.warnings} warnings"
            if self.problems.total
            else "no problems"
        )
        lines.append(f"problems: {verdict}")
        lines += ["  " + line for line in self.problems.lines()]
        return "\n".join(lines)


def inspect_dataset(
    path: str,
    fmt: str = "auto",
    tokenizer: Any = None,
    max_seq_len: int = 512,
    max_problems: int = 50,
    mask_prompt: bool = True,
) -> DatasetReport:
    """Read and check every record; with a tokenizer also count tokens and show one record."""
    result = read_dataset(resolve_data_path(path), fmt, max_problems)
    report = DatasetReport(
        path=path,
        format=result.format,
        files=result.files,
        problems=result.problems,
        records={k: len(v) for k, v in result.splits.items()},
    )
    if tokenizer is None:
        report.stats = compute_stats(result.splits, {})
        return report
    sets: dict[str, TokenizedSet] = {}
    truncated = no_target = 0
    for split, records in result.splits.items():
        sets[split], counts = tokenize_records(
            records, tokenizer, max_seq_len, mask_prompt, result.problems
        )
        truncated += counts.truncated
        no_target += counts.no_target
    report.stats = compute_stats(result.splits, sets, truncated, no_target)
    if not has_chat_template(tokenizer):
        report.template = "fallback (### Instruction / ### Response)"
    else:
        end = turn_end(tokenizer)
        report.template = (
            f"chat template (each answer is trained through {end.text})"
            if end
            else "chat template (answers end with no special token)"
        )
    if result.records:
        report.example = preview_record(result.records[0], tokenizer, mask_prompt, max_seq_len)
    return report
