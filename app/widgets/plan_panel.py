"""The plan before Start (app/plan_view.py's PlanView): what these Macs would do together,
the sync choice and why, and what each Mac adds, with one click to leave out a Mac that
would slow the run."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
)

from app.plan_view import PlanView
from app.widgets.tables import fit_height, list_table
from app.widgets.text import breakable_html, wrapping_label
from engine.config import AUTO_MODE

COLUMNS = ("Mac", "Share of the batch", "Alone (tokens/s)", "Adds (tokens/s)",
           "Training rate, link", "")  # fmt: skip
STYLE = "#plan { background:#f4f8f3; border:1px solid #c8dcc4; border-radius:4px; }"
SLOW_COLOR = "#c62828"
LOCAL_NOTE = (
    "Local processes share this machine's cores and memory: a second process on one Mac does "
    "not add a Mac, only synchronisation between the processes. They show the data-parallel "
    "path at work; Macs running <code>orchard worker</code> make a run faster."
)
IDLE_TEXT = "Not planned yet: Orchard measures the chosen Macs when this page opens."
ONE_PROCESS_GAIN = 0.05  # offer one process when it is predicted at least this much faster


def tokens(n: float) -> str:
    return f"{n:,.0f}"


def headline(view: PlanView) -> str:
    """'these 3 Macs: N tokens/s, X times the fastest alone' (or its local-processes form)."""
    c = view.chosen
    if c is None:
        return ""
    if view.local_processes > 1:
        return (f"{view.local_processes} local processes on this machine: {tokens(c.tokens_per_s)} "
                f"tokens/s, {view.ratio:.2f} times this machine alone in one process")  # fmt: skip
    if view.local_processes == 1:
        return f"this machine alone, one process: {tokens(c.tokens_per_s)} tokens/s"
    n = len(view.plan.macs) if view.plan else 0
    if n == 1:
        return f"this Mac alone: {tokens(c.tokens_per_s)} tokens/s"
    return (f"these {n} Macs: {tokens(c.tokens_per_s)} tokens/s, {view.ratio:.2f} times the "
            f"fastest alone ({c.efficiency:.0%} of the sum of each alone)")  # fmt: skip


def choice_text(view: PlanView) -> str:
    """The sync mode, compression and accumulation the run would use, and why."""
    p, c = view.plan, view.chosen
    if p is None:
        return ""
    if len(p.macs) == 1:
        return "One worker: nothing to synchronise."
    b = p.best.choice
    if view.mode == AUTO_MODE:
        accum = f"grad_accum {b.grad_accum}"
        if b.grad_accum > p.work.grad_accum:
            accum += f" (raised from {p.work.grad_accum} to fit memory)"
        return (f"auto picks {b.mode}, {compression_words(b.compression)}, {accum}. "
                f"Why: {p.reason}.")  # fmt: skip
    if c is None:
        return (f"{view.mode} (set by the job) is not planned for local processes; auto would "
                f"pick {b.mode} ({p.best.step_s:.3f}s a step).")  # fmt: skip
    text = (f"{view.mode} with {compression_words(c.choice.compression)} (set by the job): "
            f"predicted {c.step_s:.3f}s a step.")  # fmt: skip
    if (b.mode, b.compression) != (c.choice.mode, c.choice.compression):
        gain = c.step_s / p.best.step_s - 1
        text += (f" auto would pick {b.mode}, {compression_words(b.compression)}: "
                 f"{p.best.step_s:.3f}s ({gain:.0%} faster).")  # fmt: skip
    return text


def without_lines(view: PlanView) -> list[str]:
    """What the run would reach without each Mac that slows it (the planner's own figure)."""
    p = view.plan
    if p is None:
        return []
    lines = []
    for name in view.slows:
        without = p.best.tokens_per_s - p.contributions[name]
        lines.append(f"Without {name}: about {tokens(without)} tokens/s, against "
                     f"{tokens(p.best.tokens_per_s)} with it: its link or speed costs the "
                     "others more than its share of the batch gives.")  # fmt: skip
    return lines


def compression_words(codec: str) -> str:
    return "exact fp32 gradients" if codec == "none" else f"{codec} gradients on the wire"


def short_line(view: PlanView | None) -> str:
    """One line for the Cluster page."""
    if view is None:
        return "Plan: not measured yet (press Plan, or open the Training page)."
    if view.chosen is None:
        return f"Plan: none ({view.problem or 'not planned'})."
    text = f"Plan: {headline(view)}"
    if view.mode == AUTO_MODE and view.plan is not None and len(view.plan.macs) > 1:
        text += f"; auto picks {view.plan.best.choice.mode}"
    if view.slows:
        text += f"; {', '.join(view.slows)} would slow the run"
    return text + ". Details on the Training page."


class PlanPanel(QFrame):
    """``leave_out(address)``: untick a Mac from the run; ``one_process()``: dist.workers 1;
    ``remeasure()``: probe the Macs again."""

    leave_out = Signal(str)
    one_process = Signal()
    remeasure = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("plan")
        self.setStyleSheet(STYLE)
        self.view: PlanView | None = None
        top = QHBoxLayout()
        self.title = QLabel("<b>Plan for these Macs</b>")
        title = self.title
        self.status = QLabel("")
        self.status.setStyleSheet("color:#666;")
        self.measure_button = QPushButton("Measure again")
        self.measure_button.setToolTip(
            "Probe the chosen Macs again (free memory, compute rate, link) and re-plan"
        )
        self.measure_button.clicked.connect(self.remeasure)
        top.addWidget(title)
        top.addWidget(self.status, 1)
        top.addWidget(self.measure_button)
        self.headline = wrapping_label(IDLE_TEXT)
        self.headline.setStyleSheet("font-size: 11pt; font-weight: 600; color:#1b5e20;")
        self.choice = wrapping_label()
        self.table = list_table(COLUMNS, stretch_column=0)
        self.note = wrapping_label()
        self.note.setStyleSheet("color:#555;")
        self.one_button = QPushButton("Train in one process")
        self.one_button.setToolTip("Set Local workers to 1 (Training page, Distributed)")
        self.one_button.clicked.connect(self.one_process)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.addLayout(top)
        layout.addWidget(self.headline)
        layout.addWidget(self.choice)
        layout.addWidget(self.table)
        layout.addWidget(self.note)
        layout.addWidget(self.one_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.buttons: dict[str, QPushButton] = {}  # Mac name -> its "Leave it out"
        self.table.hide()
        self.choice.hide()
        self.note.hide()
        self.one_button.hide()

    def set_busy(self, text: str) -> None:
        self.status.setText(text)

    def show_view(self, view: PlanView) -> None:
        self.view = view
        self.status.setText("")
        if view.plan is None:
            self.headline.setText(f"No plan: {html.escape(view.problem or 'nothing to plan')}")
            self.choice.hide()
            self.table.hide()
        else:
            text = headline(view) or f"No prediction for dist.mode {view.mode} here"
            self.headline.setText(html.escape(text))
            self.choice.setText(html.escape(choice_text(view)))
            self.choice.show()
            self._fill_table(view)
        local = bool(view.local_processes)
        self.title.setText(f"<b>Plan for {'this machine' if local else 'these Macs'}</b>")
        notes = []
        slower = local and view.chosen is not None and view.ratio < 1 - ONE_PROCESS_GAIN
        if local and view.local_processes > 1:
            notes.append(LOCAL_NOTE)
        if slower:
            notes.append(f"Here one process is predicted {1 / view.ratio - 1:.0%} faster.")
        notes += [html.escape(line) for line in without_lines(view)]
        for name, why in view.unmeasured.items():
            notes.append(f"<b>{html.escape(name)}</b> could not be measured: "
                         f"{breakable_html(why)}. The run measures it again when it starts.")  # fmt: skip
        self.note.setText("<br>".join(notes))
        self.note.setVisible(bool(notes))
        self.one_button.setVisible(slower)

    def _fill_table(self, view: PlanView) -> None:
        p = view.plan
        assert p is not None
        self.buttons = {}
        if view.local_processes or view.chosen is None:  # processes are not Macs
            self.table.hide()
            return
        addresses = {t.name: t.address for t in view.targets}
        rows = [(m, view.chosen.shares[i]) for i, m in enumerate(p.macs)]
        self.table.setRowCount(len(rows) + len(p.refused))
        batch = p.work.batch
        for r, (mac, share) in enumerate(rows):
            gain = p.contributions.get(mac.machine)  # by machine: the planner's unit
            slows = gain is not None and gain < 0 and len(p.macs) > 1
            cells = (
                mac.name + ("  (would slow the run)" if slows else ""),
                f"{share} of {batch} sequences",
                tokens(p.alone_tokens_per_s[mac.machine]),
                f"{gain:+,.0f}" if gain is not None else "?",
                f"{mac.flops / 1e12:.2f} TFLOP/s, {mac.bandwidth_bytes_s * 8 / 1e6:,.0f} Mbit/s, "
                f"{mac.rtt_s * 1e3:.1f} ms",
            )
            self._row(r, cells, slows)
            if slows:
                self._leave_button(r, mac.name, addresses.get(mac.name, mac.name))
        for r, (name, why) in enumerate(p.refused.items(), start=len(rows)):
            self._row(r, (f"{name}  (cannot take part)", "none", "–", "–", why), True)
            self._leave_button(r, name, addresses.get(name, name))
        self.table.show()
        fit_height(self.table)

    def _row(self, r: int, cells: tuple[str, ...], slow: bool) -> None:
        for c, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setToolTip(text)
            if slow:
                item.setForeground(QColor(SLOW_COLOR))
            self.table.setItem(r, c, item)
        self.table.setCellWidget(r, len(COLUMNS) - 1, None)

    def _leave_button(self, r: int, name: str, address: str) -> None:
        button = QPushButton("Leave it out")
        button.setToolTip(f"Untick {name} from this run's workers (Cluster page)")
        button.clicked.connect(lambda _=False, a=address: self.leave_out.emit(a))
        self.table.setCellWidget(r, len(COLUMNS) - 1, button)
        self.buttons[name] = button
