"""`orchard models`, `orchard pull ID` and `orchard inspect-model ID` against a fake Hub
(a real HTTP server; tests/model/hub_server.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli.main import main
from tests.model.conftest import STORIES, hub  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
REPO = "orchard-test/stories"


def test_pull_then_models_lists_it(hub, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    env = {**os.environ}  # the fixture set HF_ENDPOINT and HF_HUB_CACHE for this process
    run = subprocess.run([sys.executable, "-m", "engine.cli.main", "pull", REPO], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "type        llama" in run.stdout and "not downloaded" in run.stdout
    assert "ready: " in run.stdout and "[####" in run.stderr  # the progress bar, to the end
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert REPO in out and "LlamaForCausalLM" in out and "ready" in out
    before = len(hub.requests)
    assert main(["pull", REPO]) == 0  # a second pull needs nothing from the Hub
    assert len(hub.requests) == before and "already in the cache" in capsys.readouterr().out


def test_inspect_model_by_id_reads_the_hub_without_downloading(
    hub,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["inspect-model", REPO]) == 0
    out = capsys.readouterr().out
    assert "mlp.down_proj (172->64)" in out and "memory per worker" in out
    assert not Path(os.environ["HF_HUB_CACHE"]).exists()


def test_pull_of_a_missing_or_gated_id_says_so(hub, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    hub.add_folder("orchard-test/gated", STORIES, gated=True)
    assert main(["pull", "orchard-test/nope"]) == 1
    assert "no such model on the Hugging Face Hub" in capsys.readouterr().err
    assert main(["pull", "orchard-test/gated"]) == 1
    assert "is gated" in capsys.readouterr().err
    assert main(["models"]) == 0
    assert "no models in the Hugging Face cache" in capsys.readouterr().out
