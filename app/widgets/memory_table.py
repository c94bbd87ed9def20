"""Per-worker memory: the engine's estimate beside each machine's memory, green/amber/red."""

from __future__ import annotations

from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHeaderView, QLabel, QTableWidget, QTableWidgetItem

from app.cluster_model import Worker
from engine.config import JobSpec
from engine.machine import FIT_SHARE, REFUSE_SHARE
from engine.model.inspect import ModelInfo
from engine.model.memory import estimate_memory

COLUMNS = ("Worker", "Memory", "Needs", "Fit")
# above AMBER, macOS and other apps get squeezed; above RED, Start refuses (engine/preflight.py)
AMBER_SHARE, RED_SHARE = FIT_SHARE, REFUSE_SHARE
COLORS = {"ok": "#2e7d32", "tight": "#ef6c00", "no": "#c62828"}
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
        """Pure arithmetic from the engine (no disk, no MLX), so it runs on the GUI thread."""
        if info is None:
            self.setRowCount(0)
            hint.setText("The estimate appears once the model has been read.")
            trainable.setText("")
            return
        machines = participants(job, workers)
        world = sum(n for _, n in machines)
        estimate = estimate_memory(info, job, world)
        parts = ", ".join(
            f"{BREAKDOWN_NAMES.get(k, k)} {gib(v)}" for k, v in estimate.breakdown.items()
        )
        tip = parts + "\n" + "\n".join(estimate.assumptions)
        self.setRowCount(len(machines))
        self.levels = []
        for r, (machine, processes) in enumerate(machines):
            need = estimate.total_bytes * processes
            level = fit_level(need, machine.memory_bytes)
            self.levels.append(level)
            per = f"{processes} × {gib(estimate.total_bytes)} = " if processes > 1 else ""
            name = machine.name + (f" ({processes} processes)" if processes > 1 else "")
            text = {
                "ok": "fits",
                "tight": "tight" if machine.memory_bytes else "unknown",
                "no": "won't fit",
            }[level]
            cells = (
                name,
                gib(machine.memory_bytes) if machine.memory_bytes else "?",
                per + gib(need),
                text,
            )
            for c, value in enumerate(cells):
                item = QTableWidgetItem(value)
                item.setToolTip(tip)
                if c == 3:
                    item.setForeground(QColor("white"))
                    item.setBackground(QColor(COLORS[level]))
                self.setItem(r, c, item)
        share = estimate.trainable_params / info.param_count if info.param_count else 0.0
        trainable.setText(
            f"Trains {estimate.trainable_params:,} parameters ({share:.2%} of the model); "
            f"micro-batch {estimate.micro_batch} per worker."
        )
        if "no" in self.levels:
            hint.setText(
                "<span style='color:#c62828'>Too big for at least one worker.</span> Try QLoRA "
                "(4-bit), a smaller batch or more gradient accumulation, a shorter max length, "
                "a lower rank, or fewer processes per machine."
            )
        elif "tight" in self.levels:
            hint.setText(
                "<span style='color:#ef6c00'>Tight on at least one worker.</span> It may swap; "
                "close other apps or reduce the batch or max length."
            )
        else:
            hint.setText(f"Fits on every worker. Breakdown per process: {parts}.")
