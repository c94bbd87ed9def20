"""The Model page's memory table says what Start's preflight says (engine/preflight.py: the
estimate at the data's real width, per machine), computed off the GUI thread; issue 12's
app follow-up: at max_seq_len the table said "won't fit" for a run Start accepts."""

from __future__ import annotations

import json
from pathlib import Path

from app.widgets.memory_table import fit_level, gib
from engine.model import estimate_memory
from engine.preflight import preflight

MEMORY = 24 * 2**30  # this machine as the table and Start see it (the cluster's local row)


def test_the_table_shows_the_preflights_fit_not_the_max_length_one(window, qtbot) -> None:
    window.cluster.local.memory_bytes = MEMORY
    page, table = window.model_page, window.model_page.memory
    window.job.set("data", "packing", False)  # the demo's records are far shorter than 512
    window.job.set("run", "batch_size", 500)
    expected = preflight(window.job.snapshot(), local_memory=MEMORY)
    assert expected.ok and [f.level for f in expected.fits] == ["fits"]
    at_max_length = estimate_memory(page.info, window.job.spec, 2).total_bytes * 2
    assert fit_level(at_max_length, MEMORY) == "no"  # what the table said before

    need = gib(expected.fits[0].need_bytes)
    qtbot.waitUntil(lambda: table.item(0, 2) is not None and table.item(0, 2).text().endswith(need),
                    timeout=30_000)  # fmt: skip
    assert table.levels == ["ok"] and table.item(0, 3).text() == "fits"
    assert "as Start checks it" in page.memory_hint.text()
    assert expected.estimate.assumptions[0] in page.memory_hint.text()

    window.job.set("run", "batch_size", 1000)  # now Start refuses it, and so does the table
    qtbot.waitUntil(lambda: table.levels == ["no"], timeout=30_000)
    assert table.item(0, 3).text() == "won't fit"
    assert "Start refuses it" in page.memory_hint.text()


def test_a_dataset_that_does_not_read_falls_back_and_says_why(window, qtbot, tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "Hi", "output": "Hello"}) + "\n{oops\n")
    window.job.set("data", "path", str(bad))
    hint = window.model_page.memory_hint
    qtbot.waitUntil(lambda: "cannot size it yet" in hint.text(), timeout=30_000)
    assert "dataset: 1 error" in hint.text() and "at max length" in hint.text()
    assert window.model_page.memory.rowCount() == 1
