"""Cluster: the Macs that will train, found by Bonjour or added by address."""

from __future__ import annotations

import os
import platform
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidgetItem,
)

from app.cluster_model import ClusterModel, Worker
from app.job_model import JobModel
from app.local_probe import describe_probe, probe_this_machine
from app.pairing import pair
from app.plan_preview import PlanPreview
from app.plan_view import PlanView
from app.remote_probe import probe_paired_worker
from app.tasks import run_task
from app.widgets.controls import NumberControl
from app.widgets.page import Page, group, hint
from app.widgets.plan_panel import short_line
from app.widgets.tables import fit_height, list_table
from app.widgets.text import wrapping_label

COLUMNS = ("Use", "Name", "Address", "Chip", "Memory", "State", "Paired")
STATE_COLORS = {"idle": "#2e7d32", "busy": "#ef6c00", "offline": "#9e9e9e", "unknown": "#616161"}
NO_PROBE = "Select a machine to measure it"
PROBE_HELP = "Measure this machine: free memory and matmul speed (takes a few seconds)"
PROBE_REMOTE_HELP = (
    "Measure this Mac over the paired channel a run uses: free memory, matmul speed, "
    "round trip and bandwidth (takes a few seconds)"
)
PROBE_UNPAIRED = "Pair with this Mac first; Probe then measures it over the paired channel"
PAIR_HELP = "Pair with the selected Mac using the code its `orchard worker` shows"
PLAN_HELP = (
    "Measure the Macs ticked for this run (or this machine) and predict what they do together: "
    "tokens/s, the sync mode auto picks, and any Mac that would slow the run"
)


NO_PEERS_BROWSING = (
    "<b>No other Macs found yet.</b> Orchard is looking for them on this network (Bonjour). "
    "On each Mac that should help, run <code>orchard worker</code>; it appears here by itself. "
    "Where multicast is blocked, add it by address below. Until then this machine trains alone."
)
NO_PEERS_OFF = (
    "<b>Not looking for other Macs</b> (network discovery is off). Add a Mac running "
    "<code>orchard worker</code> by address below. Until then this machine trains alone."
)


def format_bytes(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n else "–"


def system_name() -> str:
    """'macOS 14.5' or 'Linux 6.1' (cheap: no subprocess on Linux)."""
    if platform.system() == "Darwin":
        return f"macOS {platform.mac_ver()[0]}".strip()
    return f"{platform.system()} {platform.release().split('-')[0]}".strip()


def compute_backend() -> str:
    """Where MLX computes here; said plainly, since a Linux box trains far slower."""
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return "MLX on the GPU (Metal)"
    return "MLX on the CPU (no Apple GPU here: fine for the demo, slow for real models)"


class ClusterPage(Page):
    title = "Cluster"
    subtitle = (
        "The machines that train together. This machine is always in; Macs running "
        "`orchard worker` on your network appear by themselves."
    )

    message = Signal(str, str)
    add_requested = Signal(str, int)  # host, port
    remove_requested = Signal(str)  # worker id

    def __init__(self, job: JobModel, cluster: ClusterModel):
        super().__init__()
        self.job, self.cluster = job, cluster
        self._pairing = False
        self._probing = False
        self.plan = PlanPreview(job, cluster, self)  # the Training page shows it in full

        box, form = group("This machine")
        facts = cluster.local.raw
        self.facts: dict[str, QLabel] = {}
        for key, title, value in (
            ("name", "Name", str(facts.get("host") or "this machine")),
            ("chip", "Chip", str(facts.get("chip") or "unknown")),
            ("memory", "Memory", format_bytes(int(facts.get("memory_bytes") or 0))),
            ("cores", "CPU cores", str(os.cpu_count() or "?")),
            ("system", "System", system_name()),
            ("backend", "Trains with", compute_backend()),
            ("measured", "Measured", "not yet: select it below and press Probe"),
        ):
            label = wrapping_label(value)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.facts[key] = label
            form.addRow(title, label)
        self.processes = NumberControl(job, "dist", "workers", slider=False)
        self.processes.setToolTip(
            "How many worker processes this machine runs when no other Mac is used. "
            "Two show the data-parallel path on one machine."
        )
        form.addRow("Worker processes", self.processes)
        self.body.addWidget(box)

        box, form = group("Workers")
        self.table = list_table(COLUMNS, stretch_column=1)
        self.table.itemChanged.connect(self._use_toggled)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        form.addRow(self.table)
        self.empty = wrapping_label()
        self.empty.setStyleSheet(
            "background:#f7f7f5; border:1px dashed #c8c8c0; border-radius:4px; padding:8px;"
        )
        form.addRow(self.empty)
        self.discovering = True

        buttons = QHBoxLayout()
        self.pair_button = QPushButton("Pair…")
        self.probe_button = QPushButton("Probe")
        self.remove_button = QPushButton("Remove")
        self.pair_button.clicked.connect(self._pair)
        self.probe_button.clicked.connect(self._probe)
        self.remove_button.clicked.connect(self._remove)
        for b in (self.pair_button, self.probe_button, self.remove_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        self.plan_button = QPushButton("Plan")
        self.plan_button.setToolTip(PLAN_HELP)
        self.plan_button.clicked.connect(lambda: self.plan.activate())
        buttons.addWidget(self.plan_button)
        form.addRow(buttons)
        self.plan_line = wrapping_label(short_line(None))
        self.plan_line.setTextFormat(Qt.TextFormat.PlainText)
        form.addRow(self.plan_line)
        self.body.addWidget(box)
        self.plan.planned.connect(self._show_plan)
        self.plan.busy.connect(lambda text: self.plan_line.setText(f"Plan: {text}"))

        box, form = group("Add a worker by address")
        add_row = QHBoxLayout()
        self.address = QLineEdit()
        self.address.setPlaceholderText(
            "host:port, e.g. 192.168.1.20:50051 (when Bonjour is blocked)"
        )
        self.address.returnPressed.connect(self._add)
        add = QPushButton("Add")
        add.clicked.connect(self._add)
        add_row.addWidget(self.address, 1)
        add_row.addWidget(add)
        form.addRow(add_row)
        self.hint = hint()
        form.addRow(self.hint)
        self.body.addWidget(box)
        self.body.addStretch(1)

        cluster.changed.connect(self.refresh)
        job.changed.connect(lambda s, n: self.refresh() if s == "dist" else None)
        job.reset.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        rows = self.cluster.rows()
        hosts = set(self.job.spec.dist.hosts)
        self.table.blockSignals(True)
        self.table.setRowCount(len(rows))
        for r, w in enumerate(rows):
            use = QTableWidgetItem()
            use.setData(Qt.ItemDataRole.UserRole, w.id)
            if w.local:
                use.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                use.setCheckState(Qt.CheckState.Checked if not hosts else Qt.CheckState.Unchecked)
                use.setToolTip(
                    "This machine runs the local worker processes when no remote Mac is used"
                )
            else:
                use.setFlags(
                    Qt.ItemFlag.ItemIsEnabled
                    | Qt.ItemFlag.ItemIsUserCheckable
                    | Qt.ItemFlag.ItemIsSelectable
                )
                use.setCheckState(
                    Qt.CheckState.Checked if w.address in hosts else Qt.CheckState.Unchecked
                )
            self.table.setItem(r, 0, use)
            local_note = f" · {self.job.spec.dist.workers} processes" if w.local else ""
            values = (
                w.name,
                w.address + local_note,
                w.chip or "–",
                format_bytes(w.memory_bytes),
                w.state,
                "yes" if w.paired else "no",
            )
            for c, text in enumerate(values, start=1):
                item = QTableWidgetItem(text)
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                if c == 5:
                    item.setForeground(QColor(STATE_COLORS.get(w.state, "#616161")))
                self.table.setItem(r, c, item)
        self.table.blockSignals(False)
        fit_height(self.table)  # one row is one row high: no big empty table
        remote = self.cluster.remote()
        self.empty.setText(NO_PEERS_BROWSING if self.discovering else NO_PEERS_OFF)
        self.empty.setVisible(not remote)
        self.hint.setText(
            "A Mac that shows the pairing code of `orchard worker` can be added here."
            if not remote
            else f"{len(remote)} other Mac(s) known. Tick “Use” to train on them."
        )
        self._update_buttons()

    def set_discovery(self, on: bool) -> None:
        """Whether Bonjour browsing runs, so the empty state says the truth."""
        self.discovering = on
        self.refresh()

    def selected(self) -> Worker | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        worker_id = self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)
        return self.cluster.workers.get(worker_id)

    def _update_buttons(self) -> None:
        w = self.selected()
        remote = w is not None and not w.local
        self.remove_button.setEnabled(remote and w.source == "manual")
        self.pair_button.setEnabled(remote and not w.paired and not self._pairing)
        self.pair_button.setToolTip(PAIR_HELP if remote else "Select another Mac to pair with it")
        self.probe_button.setEnabled(w is not None and not self._probing)
        if w is None:
            self.probe_button.setToolTip(NO_PROBE)
        elif w.local:
            self.probe_button.setToolTip(PROBE_HELP)
        else:  # paired from the terminal (`orchard pair`) counts too: the probe finds out
            self.probe_button.setToolTip(PROBE_REMOTE_HELP if w.paired else PROBE_UNPAIRED)

    def _use_toggled(self, item: QTableWidgetItem) -> None:
        if item.column() != 0:
            return
        worker = self.cluster.workers.get(item.data(Qt.ItemDataRole.UserRole))
        if worker is None or worker.local:
            return
        hosts = [h for h in self.job.spec.dist.hosts if h != worker.address]
        if item.checkState() == Qt.CheckState.Checked:
            hosts.append(worker.address)
        self.job.set("dist", "hosts", hosts)

    def _add(self) -> None:
        address = self.address.text().strip()
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            self.message.emit(
                f"{address or 'address'}: expected host:port, e.g. 192.168.1.20:50051", "warning"
            )
            return
        self.add_requested.emit(host.strip("[]"), int(port))
        self.address.clear()

    def _remove(self) -> None:
        w = self.selected()
        if w is not None:
            self.job.set("dist", "hosts", [h for h in self.job.spec.dist.hosts if h != w.address])
            self.remove_requested.emit(w.id)

    def _pair(self) -> None:
        w = self.selected()
        if w is None or w.local:
            return
        code, ok = QInputDialog.getText(
            self, "Pair with a worker", f"Pairing code shown by the worker on {w.name}:"
        )
        if ok and code.strip():
            self.pair_with(w, code.strip())

    def pair_with(self, w: Worker, code: str) -> None:
        """Pair on a pool thread (network + key exchange); the result comes back as a message."""
        self._pairing = True
        self._update_buttons()
        self.message.emit(f"Pairing with {w.name}…", "info")
        run_task(
            pair,
            w.address,
            code,
            str(w.raw.get("fingerprint", "")),
            owner=self,
            on_done=lambda peer: self._paired(w, peer),
            on_error=self._pair_failed,
        )

    def _paired(self, w: Worker, peer: object) -> None:
        self._pairing = False
        self.cluster.mark_paired(w.id)
        self.refresh()
        self.message.emit(
            f"Paired with {w.name}. Probe measures it; tick “Use” to train on it.", "info"
        )

    def _pair_failed(self, message: str) -> None:
        self._pairing = False
        self._update_buttons()
        self.message.emit(f"Pairing failed: {message}", "error")

    def _probe(self) -> None:
        w = self.selected()
        if w is None or self._probing:
            return
        self.probe(w)

    def probe(self, w: Worker) -> None:
        """Measure ``w`` on a pool thread: this machine through a short-lived local worker, a
        remote Mac over the paired channel. The result comes back as a message."""
        self._probing = True
        self._update_buttons()
        self.message.emit(f"Probing {w.name}…", "info")
        fn, args = (probe_this_machine, ()) if w.local else (probe_paired_worker, (w.address,))
        run_task(
            fn,
            *args,
            owner=self,
            on_done=lambda r: self._probed(w, r),
            on_error=lambda m: self._probe_done(f"Probe of {w.name} failed: {m}", "error"),
        )

    def _show_plan(self, view: PlanView) -> None:
        self.plan_line.setText(short_line(view))
        self.plan_line.setStyleSheet("color:#c62828;" if view.slows else "")
        local = self.plan.probes.get("local")  # a plan probes this machine too
        if local is not None:
            self._show_measured(local)

    def _show_measured(self, result: Any) -> None:
        self.facts["measured"].setText(
            f"{result.free_memory_bytes / 2**30:.1f} GiB free, "
            f"{result.matmul_gflops:.1f} GFLOP/s (fp32 matmul)"
        )

    def _probed(self, w: Worker, result: object) -> None:
        self.plan.add_probe("local" if w.local else w.address, result)
        if not w.local:
            self.cluster.mark_paired(w.id)  # the paired channel worked
        else:
            self._show_measured(result)
        self._probe_done(describe_probe(w.name, result, remote=not w.local), "info")

    def _probe_done(self, text: str, level: str) -> None:
        self._probing = False
        self._update_buttons()
        self.message.emit(text, level)
