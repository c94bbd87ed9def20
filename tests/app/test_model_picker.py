"""The model picker against a fake Hugging Face Hub (a real HTTP server): the cache listed,
an id described before download, a download with progress, cancel and resume, all off the
GUI thread; the Model & LoRA page's DoRA and checkpointing controls; per-Mac shipping rows."""

from __future__ import annotations

import pytest

from engine.config import JobSpec
from engine.events import DownloadEvent, ShipEvent
from engine.model.cache import hub_cache_dir
from tests.model.conftest import STORIES, hub  # noqa: F401 - the fixture

REPO = "orchard-test/stories"
WEIGHTS = "model.safetensors"


@pytest.fixture
def picker(qtbot, hub):  # noqa: F811
    from app.widgets.model_picker import ModelPicker

    p = ModelPicker()
    qtbot.addWidget(p)
    qtbot.waitUntil(lambda: "ready in the cache" in p.cache_note.text(), timeout=10_000)
    return p


def test_look_up_then_download_then_use(picker, qtbot, hub):  # noqa: F811
    picker.id_edit.setText(REPO)
    picker.look_up()
    qtbot.waitUntil(lambda: "Download:" in picker.details.text(), timeout=10_000)
    assert (
        "LlamaForCausalLM" in picker.details.text() and "0.3M parameters" in picker.details.text()
    )
    assert not hub_cache_dir().exists()  # looked up by range requests, nothing downloaded
    assert picker.download_button.isEnabled() and not picker.use_button.isEnabled()
    picker.download()
    qtbot.waitUntil(lambda: picker.bar.format() == "downloaded", timeout=20_000)
    qtbot.waitUntil(lambda: picker.table.rowCount() == 1, timeout=10_000)
    assert picker.table.item(0, 0).text() == REPO and picker.table.item(0, 4).text() == "ready"
    with qtbot.waitSignal(picker.chosen, timeout=5_000) as chosen:
        picker.use_button.click()
    assert chosen.args == [REPO]


def test_cancel_keeps_the_part_and_the_next_download_resumes(picker, qtbot, hub):  # noqa: F811
    hub.repos[REPO].files[WEIGHTS] = (STORIES / WEIGHTS).read_bytes() * 8
    hub.repos[REPO].commit = "e" * 40
    picker.id_edit.setText(REPO)
    picker._progress.changed.connect(lambda p: p.file == WEIGHTS and picker.cancel())
    picker.download()
    qtbot.waitUntil(lambda: picker.bar.format() == "cancelled", timeout=20_000)
    assert "download cancelled" in picker.details.text()
    qtbot.waitUntil(lambda: picker.table.rowCount() == 1, timeout=10_000)
    assert "to resume" in picker.table.item(0, 4).text()
    picker._progress.changed.disconnect()
    picker._progress.changed.connect(picker._on_progress)
    picker.download()
    qtbot.waitUntil(lambda: picker.bar.format() == "downloaded", timeout=20_000)
    assert hub.gets(REPO, WEIGHTS)[-1].startswith("bytes=")  # resumed, not restarted


def test_a_missing_id_is_named(picker, qtbot):
    picker.id_edit.setText("orchard-test/nope")
    picker.look_up()
    qtbot.waitUntil(lambda: "no such model" in picker.details.text(), timeout=10_000)
    assert not picker.download_button.isEnabled() and not hub_cache_dir().exists()


def test_model_page_sets_dora_and_checkpointing_and_opens_the_picker(qtbot, settings, hub):  # noqa: F811
    from app.cluster_model import ClusterModel
    from app.job_model import JobModel
    from app.pages.model_page import ModelPage
    from app.widgets.controls import BoolControl, ChoiceControl
    from app.widgets.model_picker import ModelPicker

    job = JobModel(JobSpec())
    page = ModelPage(job, ClusterModel(), settings)
    qtbot.addWidget(page)
    kind = next(c for c in page.findChildren(ChoiceControl) if c.name == "type")
    gc = next(c for c in page.findChildren(BoolControl) if c.name == "grad_checkpoint")
    kind.setCurrentIndex(kind.findData("dora"))
    gc.setChecked(True)
    assert job.spec.lora.type == "dora" and job.spec.run.grad_checkpoint is True
    page._open_picker()
    [picker] = page.findChildren(ModelPicker)
    picker.chosen.emit(REPO)  # what "Use this model" sends
    assert job.spec.model.path == REPO and page.use_hub.isChecked()
    picker.reject()


def test_inspecting_an_id_on_the_page_downloads_nothing(hub):  # noqa: F811
    from app.pages.model_page import inspect_path

    info = inspect_path(REPO)
    assert info.model_type == "llama" and not hub_cache_dir().exists()


def test_transfer_panel_shows_each_mac(qtbot):
    from app.widgets.transfer_panel import TransferPanel

    panel = TransferPanel()
    qtbot.addWidget(panel)
    panel.on_event(DownloadEvent("org/m", "model.safetensors", 50, 100, 1, 3))
    panel.on_event(ShipEvent("10.0.0.2:50051", 0, 2_000_000, 4_000_000, 1, 3, rate_bps=1e6))
    panel.on_event(ShipEvent("10.0.0.3:50051", 1, 0, 0, 0, 0, held_bytes=4_000_000, done=True))
    texts = {k: row[2].text() for k, row in panel.rows.items()}
    assert texts["download"].startswith("org/m: 50 B of 100 B")
    assert texts["10.0.0.2:50051"] == "sending 2.0 MB of 4.0 MB at 1.0 MB/s (1/3 files)"
    assert texts["10.0.0.3:50051"] == "already holds every file (4.0 MB)"
    assert panel.isVisibleTo(panel.parentWidget() or panel)
