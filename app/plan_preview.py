"""Keeps the plan before Start current: probes the chosen Macs once, re-plans on every change.

Nothing is measured until something asks (``activate``: the Training page shown, a Plan
button, a probe from the Cluster page), since a probe of this machine starts a worker
process. From then on a change to the workers, the model, LoRA, the batch or the sync
settings re-plans after a short pause (debounced), on a pool thread: probing only Macs not
measured yet, so re-planning costs milliseconds. One task runs at a time; changes made
while it runs plan again once it ends, and only the newest plan is shown.

While a run trains nothing is probed (``set_training``): a probe would take the cores the
run is training on, and measure a busy machine. Re-planning from probes already made goes
on; a probe still needed waits for the run's end.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from app.cluster_model import ClusterModel
from app.job_model import JobModel
from app.plan_view import PlanView, Target, make_view, probe_target, targets_for
from app.tasks import describe_error, run_task

log = logging.getLogger(__name__)

DEBOUNCE_MS = 300
WAITS_FOR_RUN = "Measured when the run ends: a probe now would take the cores it trains on"
# settings that change a plan: (section, name); a section alone means all of it
PLAN_INPUTS = {
    ("model", None), ("lora", None), ("dist", None),
    ("run", "batch_size"), ("run", "grad_accum"), ("run", "precision"),
    ("data", "max_seq_len"),
}  # fmt: skip


def plan_task(job: Any, targets: list[Target], probes: dict[str, Any],
              errors: dict[str, str]) -> tuple[PlanView, dict, dict]:  # fmt: skip
    """Pool thread: probe the targets neither measured nor failed yet (one after another:
    probed at once, one machine's benchmark would take the cores another's round trips are
    timed with), then plan. Returns the view, the new probes and the new failures."""
    fresh: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for t in targets:
        if t.address not in probes and t.address not in errors:
            try:
                fresh[t.address] = probe_target(t)
            except Exception as e:  # noqa: BLE001 - one Mac that cannot be measured is named
                failed[t.address] = describe_error(e)
    view = make_view(job, targets, {**probes, **fresh}, {**errors, **failed})
    return view, fresh, failed


class PlanPreview(QObject):
    """``planned(PlanView)`` with each new plan; ``busy(str)`` says what it is doing."""

    planned = Signal(object)
    busy = Signal(str)

    def __init__(self, job: JobModel, cluster: ClusterModel, parent: QObject | None = None):
        super().__init__(parent)
        self.job, self.cluster = job, cluster
        self.active = False
        self.view: PlanView | None = None
        self.probes: dict[str, Any] = {}  # address ("local" for this machine) -> ProbeResult
        self.errors: dict[str, str] = {}  # address -> why its probe failed (until it changes)
        self._running = False
        self._again = False
        self._measure = 0  # bumped by remeasure: probes of an older round are not kept
        self.training = False  # a run trains: probe nothing until it ends
        self._waiting = False  # a plan needs a probe and waits for the run's end
        self._timer = QTimer(self, singleShot=True, interval=DEBOUNCE_MS)
        self._timer.timeout.connect(self._start)
        job.changed.connect(self._on_change)
        job.reset.connect(self.schedule)
        cluster.changed.connect(self._cluster_changed)

    def activate(self) -> None:
        """Plan now (probing what is not measured yet), and keep the plan current after."""
        if self.active and (self.view is not None or self._running):
            return
        self.active = True
        self._start()

    def remeasure(self) -> None:
        """Forget every probe and plan again (a button: the machines' load changed)."""
        self.probes.clear()
        self.errors.clear()
        self._measure += 1
        self.active = True
        self._start()

    def add_probe(self, address: str, result: Any) -> None:
        """A probe made elsewhere (the Cluster page's Probe button) is a measurement too."""
        self.probes[address] = result
        self.active = True
        self.schedule()

    def set_training(self, training: bool) -> None:
        """A run started (True) or ended (False); a probe held back meanwhile runs now."""
        self.training = training
        if not training and self._waiting:
            self._waiting = False
            self._start()

    def schedule(self) -> None:
        if self.active:
            self._timer.start()

    def _cluster_changed(self) -> None:
        self.errors.clear()  # paired since, or back online: worth another try
        self.schedule()

    def _on_change(self, section: str, name: str) -> None:
        if (section, None) in PLAN_INPUTS or (section, name) in PLAN_INPUTS:
            self.schedule()

    def _start(self) -> None:
        if self._running:
            self._again = True
            return
        self._running, self._again = True, False
        job = copy.deepcopy(self.job.spec)  # later edits must not race the pool thread
        targets = targets_for(job, self.cluster.rows())
        todo = [
            t.name for t in targets if t.address not in self.probes and t.address not in self.errors
        ]
        if todo and self.training:
            self._running, self._waiting = False, True
            self.busy.emit(WAITS_FOR_RUN)
            return
        self.busy.emit(f"Measuring {', '.join(todo)}…" if todo else "Planning…")
        measure = self._measure
        run_task(plan_task, job, targets, dict(self.probes), dict(self.errors), owner=self,
                 on_done=lambda r: self._done(r, measure), on_error=self._failed)  # fmt: skip

    def _done(self, result: tuple[PlanView, dict, dict], measure: int) -> None:
        view, fresh, failed = result
        if measure == self._measure:  # else "Measure again" was pressed while this ran
            self.probes.update(fresh)
            self.errors.update(failed)
        self._finish(view)

    def _failed(self, message: str) -> None:
        log.warning("plan failed: %s", message)
        self._finish(PlanView(None, [], self.job.spec.dist.mode, problem=message))

    def _finish(self, view: PlanView) -> None:
        self._running = False
        if self._again:  # the job changed while this one ran: only the newest plan is shown
            self._start()
            return
        self.view = view
        self.planned.emit(view)
