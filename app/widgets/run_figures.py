"""Measured against predicted, in words: the plan a run started with (the first "running"
StateEvent's ``plan``), the latest step's measured and predicted time, the scaling efficiency,
and each worker's share of the batch (``share`` in worker rows, when the run balances the
batch by speed; else each worker's tokens). Absent figures are left out, never invented."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QLabel, QSizePolicy

WAITING = "The plan and each step's figures show here once the run trains."
STYLE = "color:%s; padding:2px 0;"
NO_PREDICTION = "no prediction (the planner predicts dist.mode auto runs of 2 or more workers)"
EFFICIENCY_HELP = (  # engine/plan/efficiency.py defines both figures; this only shows them
    "Tokens/s counts trained tokens (what the loss counts: no padding, no masked prompt), "
    "as mlx-lm reports it. Scaling efficiency: tokens/s over the sum of each machine's "
    "tokens/s alone, in one process, at the speed it showed in the step (100%: every "
    "machine fully used, synchronisation free; local processes share one machine)."
)


def seconds(x: float) -> str:
    """3 significant digits, never an exponent: '0.435', '7.27', '300', '5,563'."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def codec_words(codec: str) -> str:
    return "exact fp32 gradients" if codec in ("", "none") else f"{codec} gradients"


def plan_line(plan: dict[str, Any]) -> str:
    """The plan the coordinator made (engine.plan.resolve.plan_details)."""
    text = (f"Plan (auto): {plan.get('mode', '?')}, {codec_words(str(plan.get('compression', '')))}, "
            f"grad_accum {plan.get('grad_accum', '?')}")  # fmt: skip
    if "predicted_step_s" in plan:
        text += f" · predicted {seconds(plan['predicted_step_s'])} s a step"
    if "predicted_tokens_per_s" in plan:
        text += f", {plan['predicted_tokens_per_s']:,.0f} trained tokens/s"
    if plan.get("local"):  # the planner compares processes of one machine with it alone
        if "speedup" in plan:
            text += f", {plan['speedup']:.2f}× this machine alone in one process"
        text += " · local processes share this machine's cores: no Mac was added"
    elif "speedup" in plan:
        text += f", {plan['speedup']:.2f}× the fastest Mac alone"
    slows = plan.get("slows") or []
    if slows:
        text += f" · {', '.join(map(str, slows))} would slow it"
    return text


class RunFigures(QLabel):
    """Two lines above the Monitor's charts, of a fixed height and always there (a grey note
    until a run has figures): each line is cut to the width (``…``, the whole text in the
    tooltip), so figures coming or going never move or resize the charts under them (a
    relayout repaints all six)."""

    LINES = 2

    def __init__(self) -> None:
        super().__init__()
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setStyleSheet(STYLE % "#333")
        self._muted = False  # the grey placeholder is shown
        self.setFixedHeight(self.LINES * self.fontMetrics().lineSpacing() + 6)
        self._lines: list[str] = []
        self.clear()

    def clear(self) -> None:
        """No figures (a new run); the line keeps its place."""
        self.plan: dict[str, Any] | None = None
        self.step = 0
        self.train: dict[str, float] = {}
        self.shares: dict[int, float] = {}  # worker -> sequences of the batch (balance)
        self.tokens: dict[int, float] = {}  # worker -> tokens this step
        self._show_lines([])

    def full_text(self) -> str:
        return "\n".join(self._lines)

    def set_plan(self, plan: dict[str, Any]) -> None:
        self.plan = dict(plan)
        self.refresh()

    def take(self, step: int, kind: str, worker: Any, values: dict[str, Any],
             history: bool = False) -> bool:  # fmt: skip
        """One metrics row; True when it changed what is shown."""
        if kind == "train" and "step_time_s" in values:
            if step < self.step and not history:
                return False
            if step != self.step:  # a new step: the last step's split is over
                self.shares, self.tokens = {}, {}
            self.step = step
            self.train = {k: float(values[k]) for k in
                          ("step_time_s", "predicted_step_s", "scaling_efficiency",
                           "tokens_per_s", "work_tokens_per_s") if k in values}  # fmt: skip
            return True
        if kind == "worker" and worker is not None:
            w = int(worker)
            if "share" in values:
                self.shares[w] = float(values["share"])
            if "tokens" in values:
                self.tokens[w] = float(values["tokens"])
            return True
        return False

    def live_line(self) -> str:
        t = self.train
        if not t:
            return ""
        parts = [f"Step {self.step}: {seconds(t['step_time_s'])} s measured"]
        if "predicted_step_s" in t:
            off = t["step_time_s"] / t["predicted_step_s"] - 1 if t["predicted_step_s"] else 0.0
            parts[0] += f", {seconds(t['predicted_step_s'])} s predicted ({off:+.0%})"
        elif self.plan is None:
            parts.append(NO_PREDICTION)
        if "tokens_per_s" in t and "work_tokens_per_s" in t:  # what tokens/s counts, and not
            parts.append(f"{t['tokens_per_s']:,.0f} trained tokens/s "
                         f"({t['work_tokens_per_s']:,.0f} computed, padding included)")  # fmt: skip
        if "scaling_efficiency" in t:
            parts.append(f"scaling efficiency {t['scaling_efficiency']:.0%}")
        if self.shares:
            split = ", ".join(f"w{w} {self.shares[w]:.0f}" for w in sorted(self.shares))
            parts.append(f"share of the batch: {split} sequences")
        elif len(self.tokens) > 1:
            total = sum(self.tokens.values()) or 1.0
            split = ", ".join(f"w{w} {self.tokens[w] / total:.0%}" for w in sorted(self.tokens))
            parts.append(f"tokens per worker: {split}")
        return " · ".join(parts)

    def refresh(self) -> None:
        lines = [plan_line(self.plan)] if self.plan else []
        if live := self.live_line():
            lines.append(live)
        self._show_lines(lines)

    def _show_lines(self, lines: list[str]) -> None:
        self._lines = lines[: self.LINES]
        self.setToolTip(f"{self.full_text()}\n\n{EFFICIENCY_HELP}" if lines else EFFICIENCY_HELP)
        self._elide()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        metrics, width = self.fontMetrics(), max(1, self.contentsRect().width())
        lines = self._lines or [WAITING]
        text = "\n".join(metrics.elidedText(x, Qt.TextElideMode.ElideRight, width) for x in lines)
        if text == self.text():  # an unchanged text costs no relayout request
            return
        if self._muted != (not self._lines):
            self._muted = not self._lines
            self.setStyleSheet(STYLE % ("#888" if self._muted else "#333"))
        self.setText(text)
