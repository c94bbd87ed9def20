"""The plan before Start: what the chosen Macs do together, the sync choice, what each Mac
adds, and one click to leave out a Mac that would slow the run (app/plan_view.py,
app/plan_preview.py, app/widgets/plan_panel.py, the Training and Cluster pages).

Remote Macs are Bonjour rows with probe results handed in as the Cluster page's Probe hands
them (real ProbeResult figures: an M2 Ultra, an M3 Pro on 10 GbE, an Air on congested Wi-Fi);
the planner's maths is the engine's own. This machine is probed for real (a local worker).
"""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from app.plan_view import Target, make_view
from app.widgets.plan_panel import choice_text, headline, short_line
from engine.config import JobSpec
from engine.discovery import PeerRecord
from engine.events import PeerEvent
from engine.model import inspect_model
from engine.rpc.probe_client import ProbeResult
from tests.app.conftest import ROOT
from tests.app.real_input import click, click_sidebar, controls, type_into

QWEN = ROOT / "resources" / "model_configs" / "Qwen2.5-1.5B-Instruct"
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# name: (address, chip, memory GiB, probe: fp32 matmul GFLOP/s, MB/s, round trip ms)
MACS = {
    "mac-studio": ("10.0.0.5", "Apple M2 Ultra", 192, 50_000, 1250, 0.2),
    "macbook-pro": ("10.0.0.6", "Apple M3 Pro", 36, 30_000, 1250, 0.2),
    "macbook-air": ("10.0.0.7", "Apple M2", 16, 7_500, 18.75, 8.0),  # congested Wi-Fi
}


def address(name: str) -> str:
    return f"{MACS[name][0]}:50051"


def probe(name: str) -> ProbeResult:
    _, _, gib, gflops, mb_s, rtt = MACS[name]
    return ProbeResult(int(gib * 0.8 * 2**30), gflops, rtt, mb_s)


def big_job(**dist) -> JobSpec:
    job = JobSpec()
    job.model.path = str(QWEN)
    job.lora.target_modules, job.lora.rank, job.run.batch_size = ALL_LINEAR, 16, 32
    for k, v in dist.items():
        setattr(job.dist, k, v)
    return job


# ---- the view, without a window --------------------------------------------------------------
def test_three_macs_one_of_which_slows_the_run() -> None:
    job = big_job(hosts=[address(n) for n in MACS])
    targets = [Target(n, address(n)) for n in MACS]
    info, probes = inspect_model(QWEN), {address(n): probe(n) for n in MACS}
    view = make_view(job, targets, probes, info=info)
    assert view.plan is not None and view.chosen is view.plan.best
    assert view.slows == ["macbook-air"]
    text = headline(view)
    assert text.startswith("these 3 Macs: ") and " tokens/s, " in text
    assert f"{view.plan.best.speedup:.2f} times the fastest alone" in text
    why = choice_text(view)
    assert why.startswith(f"auto picks {view.plan.best.choice.mode}") and "Why: " in why
    assert "macbook-air would slow the run" in short_line(view)

    without = make_view(job, targets[:2], probes, info=info)
    assert without.slows == [] and without.chosen.tokens_per_s > view.chosen.tokens_per_s


def test_a_mode_set_by_the_job_is_predicted_and_compared_with_auto() -> None:
    job = big_job(hosts=[address(n) for n in MACS], mode="parameter-server")
    targets = [Target(n, address(n)) for n in MACS]
    view = make_view(job, targets, {address(n): probe(n) for n in MACS}, info=inspect_model(QWEN))
    assert view.chosen.choice.mode == "parameter-server"
    assert view.chosen.step_s > view.plan.best.step_s
    text = choice_text(view)
    assert text.startswith("parameter-server with exact fp32 gradients (set by the job)")
    assert f"auto would pick {view.plan.best.choice.mode}" in text


def test_local_processes_share_one_machine() -> None:
    job = JobSpec()  # the demo: two local processes
    result = ProbeResult(16 * 2**30, 1000.0, 0.1, 1000.0)
    view = make_view(job, [Target("vm", "local", True, 2)], {"local": result})
    assert view.local_processes == 2 and view.slows == []
    assert [m.machine for m in view.plan.macs] == ["vm", "vm"]
    assert sum(m.free_memory_bytes for m in view.plan.macs) == result.free_memory_bytes
    assert 0 < view.ratio < 1  # the same cores, plus synchronisation: never a speedup
    assert view.ratio == view.chosen.speedup  # the planner's own figure, not one of the app's
    assert headline(view).startswith("2 local processes on this machine: ")
    assert "times this machine alone in one process" in headline(view)
    assert "measured from the" in view.plan.work.data_note  # the demo data's real widths


def test_the_app_and_the_coordinator_plan_this_machine_alike() -> None:
    """The app probes this machine once, in one process; the coordinator probes its local
    processes at once, each seeing its share. Same machine: the same plan (it once said
    1.43x 'the fastest alone' where the app said under 1x)."""
    from engine.plan.resolve import plan_for

    job = JobSpec()
    machine = ProbeResult(16 * 2**30, 1000.0, 0.1, 1000.0)
    half = ProbeResult(16 * 2**30, 500.0, 0.1, 1000.0)  # each process, sharing the cores
    view = make_view(job, [Target("vm", "local", True, 2)], {"local": machine})
    run = plan_for(job, [("127.0.0.1:5001", half), ("127.0.0.1:5002", half)], local=True)
    assert run.best.choice == view.plan.best.choice
    assert run.best.step_s == pytest.approx(view.plan.best.step_s)
    assert run.best.speedup == pytest.approx(view.ratio) and run.best.speedup < 1
    assert run.best.tokens_per_s == pytest.approx(view.chosen.tokens_per_s)


def test_what_cannot_be_planned_is_said() -> None:
    job = big_job(hosts=[address("mac-studio")])
    targets = [Target("mac-studio", address("mac-studio"))]
    view = make_view(job, targets, {}, {address("mac-studio"): "not paired with this Mac yet"})
    assert view.chosen is None and view.unmeasured == {"mac-studio": "not paired with this Mac yet"}
    assert "could be measured" in view.problem
    job.model.path = "someone/not-downloaded-model"
    view = make_view(job, targets, {address("mac-studio"): probe("mac-studio")})
    assert view.chosen is None and "the run plans when it starts" in view.problem


# ---- the window ------------------------------------------------------------------------------
def add_macs(window, qtbot) -> None:
    for host, (ip, chip, gib, *_) in MACS.items():
        record = PeerRecord(worker_id=f"id-{host}", host=host, addresses=(ip,), port=50051,
                            chip=chip, memory_bytes=gib * 2**30,
                            service_name=f"{host}._orchard._tcp.local.").to_dict()  # fmt: skip
        with qtbot.waitSignal(window.cluster.changed, timeout=5_000):
            window.bridge.sink(PeerEvent("added", record))


def use_column(page, name: str):
    row = next(r for r in range(page.table.rowCount()) if page.table.item(r, 1).text() == name)
    return page.table.item(row, 0)


@pytest.mark.timeout(120)
def test_leave_out_the_mac_that_slows_the_run(window, qtbot) -> None:
    add_macs(window, qtbot)
    cluster = window.cluster_page
    for name in MACS:  # ticked on the Cluster page, as a user does
        use_column(cluster, name).setCheckState(Qt.CheckState.Checked)
    job = window.job
    job.set("model", "path", str(QWEN))
    job.set("lora", "target_modules", ALL_LINEAR)
    job.set("lora", "rank", 16)
    job.set("run", "batch_size", 32)
    preview = cluster.plan
    for name in MACS:  # each Mac's Probe result, as the Cluster page's Probe hands it over
        preview.add_probe(address(name), probe(name))
    qtbot.waitUntil(lambda: preview.view is not None and preview.view.chosen is not None,
                    timeout=30_000)  # fmt: skip
    assert "macbook-air would slow the run" in cluster.plan_line.text()

    click_sidebar(window, "Training")
    panel = window.training_page.plan_panel
    qtbot.waitUntil(lambda: panel.view is preview.view, timeout=10_000)
    assert panel.headline.text().startswith("these 3 Macs: ")
    assert list(panel.buttons) == ["macbook-air"]
    assert "Without macbook-air: about " in panel.note.text()
    mode = window.training_page.mode
    assert mode.currentText().startswith("auto (recommended): ")  # the concrete pick, once planned

    before = preview.view.chosen.tokens_per_s
    window.training_page.scroll_area.ensureWidgetVisible(panel.buttons["macbook-air"])
    click(panel.buttons["macbook-air"])
    assert job.spec.dist.hosts == [address("mac-studio"), address("macbook-pro")]
    assert use_column(cluster, "macbook-air").checkState() == Qt.CheckState.Unchecked
    qtbot.waitUntil(lambda: panel.headline.text().startswith("these 2 Macs: "), timeout=30_000)
    assert not panel.buttons and preview.view.chosen.tokens_per_s > before


@pytest.mark.timeout(120)
def test_this_machine_is_probed_and_the_plan_follows_the_batch(window, qtbot) -> None:
    """The default job: two local processes. Opening the Training page probes this machine
    (a real short-lived worker); a later change re-plans without probing again."""
    preview = window.cluster_page.plan
    assert preview.view is None and not preview.probes  # nothing measured before it is asked
    click_sidebar(window, "Training")
    page = window.training_page
    qtbot.waitUntil(lambda: page.plan_panel.view is not None, timeout=90_000)
    view = page.plan_panel.view
    assert view.chosen is not None, view.problem
    assert page.plan_panel.headline.text().startswith("2 local processes on this machine: ")
    assert "a second process on one Mac does not add a Mac" in page.plan_panel.note.text()
    assert page.plan_panel.table.isHidden()  # processes are not Macs: no "adds" column
    assert "Planned now: " in page.mode_hint.text()
    assert page.mode.currentText().startswith("auto (recommended): ")
    assert window.cluster_page.plan_line.text().startswith("Plan: 2 local processes")
    measured = preview.probes["local"]
    facts = window.cluster_page.facts["measured"].text()  # the Cluster page shows that probe
    assert f"{measured.matmul_gflops:.1f} GFLOP/s" in facts, facts

    type_into(qtbot, window, controls(window)[("run", "batch_size")], "4")
    qtbot.waitUntil(lambda: page.plan_panel.view.plan.work.batch == 4, timeout=30_000)
    assert preview.probes["local"] is measured  # planned again from the same probe


def test_auto_is_explained_and_recommended(window) -> None:
    from app.pages.training_page import SYNC_EXPLAINED

    page = window.training_page
    assert "auto" in SYNC_EXPLAINED
    assert window.job.spec.dist.mode == "auto"
    assert page.mode.currentText().startswith("auto (recommended)")
    assert page.mode_hint.text().startswith(SYNC_EXPLAINED["auto"])
    page.mode.setCurrentIndex(page.mode.findData("ring"))
    assert window.job.spec.dist.mode == "ring" and page.mode_hint.text() == SYNC_EXPLAINED["ring"]


def test_a_mode_the_planner_leaves_out_here_is_said_so(qtbot) -> None:
    from app.widgets.plan_panel import PlanPanel

    job = JobSpec()
    job.dist.mode = "mlx"  # local processes: auto never picks MLX's ring (it busy-polls)
    view = make_view(job, [Target("vm", "local", True, 2)],
                     {"local": ProbeResult(16 * 2**30, 1000.0, 0.1, 1000.0)})  # fmt: skip
    assert view.plan is not None and view.chosen is None
    panel = PlanPanel()
    qtbot.addWidget(panel)
    panel.show_view(view)
    assert panel.headline.text() == "No prediction for dist.mode mlx here"
    assert panel.choice.text().startswith("mlx (set by the job) is not planned for local processes")
    assert panel.table.isHidden() and panel.one_button.isHidden()
