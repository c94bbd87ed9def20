"""Per-worker memory: the engine's estimate beside each machine's memory, green/amber/red.

``show_fits`` shows what Start's preflight says (engine/preflight.py ``PreflightResult.fits``:
the estimate at the dataset's real width, per machine), so this table and Start never
disagree; ``show_estimate`` (at max_seq_len) is the fallback while the preflight cannot size
the run (the dataset or the model does not read yet)."""

from __future__ import annotations

from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHeaderView, QLabel, QTableWidget, QTableWidgetItem

from app.cluster_model import Worker
from engine.config import JobSpec
from engine.machine import FIT_SHARE, REFUSE_SHARE
from engine.model.inspect import ModelInfo
from engine.model.memory import MemoryEstimate, estimate_memory
from engine.preflight import PreflightResult

COLUMNS = ("Worker", "Memory", "Needs", "Fit")
# above AMBER, macOS and other apps get squeezed; above RED, Start refuses (engine/preflight.py)
AMBER_SHARE, RED_SHARE = FIT_SHARE, REFUSE_SHARE
COLORS = {"ok": "#2e7d32", "tight": "#ef6c00", "no": "#c62828", "unknown": "#757575"}
LEVEL_WORDS = {"ok": "fits", "tight": "tight", "no": "won't fit", "unknown": "unknown"}
# engine/preflight.py's MachineFit.level -> this table's level
PREFLIGHT_LEVELS = {"fits": "ok", "tight": "tight", "won't fit": "no", "unknown": "unknown"}
BREAKDOWN_NAMES = {
    "base_weights": "base weights",
    "trainable_weights": "LoRA weights",
    "gradients": "gradients",
    "optimizer_state": "AdamW state",
    "activations": "activations",
}


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n < 10 * 2**30 else f"{n / 2**30:.1f} GiB"


def participants(job: JobSpec, workers: list[Worker]) -> list[tuple[Worker, int]]:
    """(machine, processes on it) for the job: local processes, or the chosen remote Macs."""
    if not job.dist.hosts:
        local = next(w for w in workers if w.local)
        return [(local, job.dist.workers)]
    by_address = {w.address: w for w in workers}
    return [
        (by_address.get(h, Worker(id=h, name=h, address=h, state="unknown")), 1)
        for h in job.dist.hosts
    ]


def fit_level(need: int, have: int) -> str:
    if not have:
        return "tight"
    share = need / have
    return "ok" if share <= AMBER_SHARE else "tight" if share <= RED_SHARE else "no"


class MemoryTable(QTableWidget):
    def __init__(self) -> None:
        super().__init__(0, len(COLUMNS))
        self.setHorizontalHeaderLabels(COLUMNS)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.setMaximumHeight(150)
        self.levels: list[str] = []

    def show_estimate(
        self,
        info: ModelInfo | None,
        job: JobSpec,
        workers: list[Worker],
        hint: QLabel,
        trainable: QLabel,
    ) -> None:
        """At max_seq_len: pure arithmetic from the engine (no disk, no MLX), GUI thread."""
        if info is None:
            self.setRowCount(0)
            hint.setText("The estimate appears once the model has been read.")
            trainable.setText("")
            return
        machines = participants(job, workers)
        estimate = estimate_memory(info, job, sum(n for _, n in machines))
        rows = []
        for machine, processes in machines:
            need = estimate.total_bytes * processes
            level = fit_level(need, machine.memory_bytes)
            if level == "tight" and not machine.memory_bytes:
                level = "unknown"
            rows.append((machine.name, machine.memory_bytes, processes, need, level))
        self._fill(rows, estimate)
        describe_trainable(estimate, info, trainable)
        self._say_level(hint, estimate)

    def show_fits(
        self, result: PreflightResult, info: ModelInfo, names: dict[str, str], hint: QLabel,
        trainable: QLabel,
    ) -> None:  # fmt: skip
        """The preflight's fit per machine (``result.fits`` must not be empty); ``names`` maps
        its machine names ("this machine", a dist.hosts entry) to the names the app shows."""
        rows = [
            (names.get(f.machine.name, f.machine.name), f.machine.memory_bytes,
             f.machine.processes, f.need_bytes, PREFLIGHT_LEVELS.get(f.level, "unknown"))
            for f in result.fits
        ]  # fmt: skip
        self._fill(rows, result.estimate)
        describe_trainable(result.estimate, info, trainable)
        self._say_level(hint, result.estimate, sized=True)

    def _fill(self, rows: list[tuple[str, int, int, int, str]], estimate: MemoryEstimate) -> None:
        """One row per machine: (name, its memory, processes, bytes they need, level)."""
        tip = breakdown(estimate) + "\n" + "\n".join(estimate.assumptions)
        self.setRowCount(len(rows))
        self.levels = []
        for r, (name, have, processes, need, level) in enumerate(rows):
            self.levels.append(level)
            per = f"{processes} × {gib(need // processes)} = " if processes > 1 else ""
            shown = name + (f" ({processes} processes)" if processes > 1 else "")
            cells = (shown, gib(have) if have else "?", per + gib(need), LEVEL_WORDS[level])
            for c, value in enumerate(cells):
                item = QTableWidgetItem(value)
                item.setToolTip(tip)
                if c == 3:
                    item.setForeground(QColor("white"))
                    item.setBackground(QColor(COLORS[level]))
                self.setItem(r, c, item)

    def _say_level(self, hint: QLabel, estimate: MemoryEstimate, sized: bool = False) -> None:
        """The hint under the table: the worst level, and the width the estimate assumed."""
        if "no" in self.levels:
            text = (
                "<span style='color:#c62828'>Too big for at least one worker.</span> Try QLoRA "
                "(4-bit), a smaller batch or more gradient accumulation, a shorter max length, "
                "a lower rank, or fewer processes per machine."
            )
            if sized:
                text += " Start refuses it and offers the fixes that fit."
        elif "tight" in self.levels:
            text = (
                "<span style='color:#ef6c00'>Tight on at least one worker.</span> It may swap; "
                "close other apps or reduce the batch or max length."
            )
        elif "unknown" in self.levels:
            text = "A worker's memory is unknown here: not checked. Probe it on the Cluster page."
        else:
            text = f"Fits on every worker. Breakdown per process: {breakdown(estimate)}."
        if estimate.assumptions:  # the width decides it: say which one, and whose check it is
            where = "as Start checks it (the data's longest item)" if sized else "at max length"
            text += f"<br>Estimated {where}: {estimate.assumptions[0]}."
        hint.setText(text)


def breakdown(estimate: MemoryEstimate) -> str:
    return ", ".join(f"{BREAKDOWN_NAMES.get(k, k)} {gib(v)}" for k, v in estimate.breakdown.items())


def describe_trainable(estimate: MemoryEstimate, info: ModelInfo, trainable: QLabel) -> None:
    share = estimate.trainable_params / info.param_count if info.param_count else 0.0
    trainable.setText(
        f"Trains {estimate.trainable_params:,} parameters ({share:.2%} of the model); "
        f"micro-batch {estimate.micro_batch} per worker."
    )
