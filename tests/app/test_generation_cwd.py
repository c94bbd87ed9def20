"""Results from any folder (issue 11, item 1): the generator runs in the Orchard folder, so a
run folder the app knows by a relative path must reach it as an absolute one."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.generation import GenerationProcess, generate_args
from engine.train.run_dir import JOB_FILE, new_run_dir
from engine.train.run_local import run_local
from tests.runtime.helpers import tiny_job


def test_a_relative_run_folder_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = tiny_job(Path("runs"), steps=1)
    run = new_run_dir(job)
    assert run.is_absolute() and run.parent == tmp_path / "runs"
    assert f'out_dir = "{tmp_path / "runs"}"' in (run / JOB_FILE).read_text()


def test_generation_paths_are_absolute_and_the_demo_stays_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "r" / "adapter").mkdir(parents=True)
    (tmp_path / "demo").mkdir()  # a folder called demo here is not the bundled model
    args = generate_args("demo", 8, "runs/r/adapter")
    assert args[args.index("--adapter") + 1] == str(tmp_path / "runs" / "r" / "adapter")
    assert args[args.index("--model") + 1] == "demo"


@pytest.mark.timeout(240)
def test_results_with_an_adapter_work_outside_the_repo(qtbot, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run_local(tiny_job(Path("runs"), steps=1))
    assert result.state == "finished", result.message
    relative = Path("runs") / Path(result.run_dir).name / "adapter"  # as the app once had it
    assert (elsewhere / relative / "adapters.safetensors").is_file()
    gen = GenerationProcess()
    outcome: list[tuple[str, str]] = []
    gen.finished.connect(lambda text: outcome.append(("finished", text)))
    gen.failed.connect(lambda message: outcome.append(("failed", message)))
    gen.start("demo", "Where does Pip live?", 4, adapter=str(relative))
    qtbot.waitUntil(lambda: bool(outcome), timeout=180_000)
    assert outcome[0][0] == "finished" and outcome[0][1], outcome
