"""The `orchard` command as a user types it (a real subprocess for the entry point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def _orchard(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.main", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_help_lists_every_command() -> None:
    done = _orchard("--help")
    assert done.returncode == 0
    for cmd in ("app", "demo", "train", "resume", "inspect-data", "inspect-model", "worker",
                "export", "pair", "discover", "models", "pull"):  # fmt: skip
        assert cmd in done.stdout


def test_inspect_data_on_the_demo_is_clean_and_on_a_bad_file_names_the_line(tmp_path: Path) -> None:
    assert main(["inspect-data", "demo"]) == 0
    bad = tmp_path / "bad.jsonl"
    good = {"instruction": "Hi", "output": "Hello"}
    bad.write_text(json.dumps(good) + "\n{not json\n" + json.dumps({"instruction": 3}) + "\n")
    done = _orchard("inspect-data", str(bad))
    assert done.returncode == 1
    assert "bad.jsonl:2" in done.stdout and "bad.jsonl:3" in done.stdout
    assert "Traceback" not in done.stderr


def test_inspect_model_prints_modules_and_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect-model", "demo"]) == 0
    out = capsys.readouterr().out
    assert "q_proj" in out and "llama" in out


def test_a_bad_override_is_refused_with_the_field(tmp_path: Path) -> None:
    done = _orchard("train", "--set", "lora.rank=0", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "lora.rank: expected a value in [1, 1024], got 0" in done.stderr
    assert "Traceback" not in done.stderr


def test_app_flags_reach_the_app() -> None:
    # `--help` is the app's own (it knows --no-discovery), not the CLI's.
    done = _orchard("app", "--help", timeout=60)
    assert done.returncode == 0
    assert "--no-discovery" in done.stdout


def test_a_one_process_run_resumes_on_one_worker_only_and_says_so(tmp_path: Path) -> None:
    """engine.train's checkpoints name each tensor; the engine's are world-size independent."""
    from engine.train.run_local import run_local
    from tests.runtime.helpers import tiny_job

    stop_after_two = {"run.steps": 2, "run.checkpoint_every": 1}
    result = run_local(tiny_job(tmp_path, **stop_after_two))
    assert result.state == "finished", result.message
    done = _orchard("resume", str(result.run_dir), "--workers", "2")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "trained in one process" in done.stderr and "--workers 1" in done.stderr


def test_worker_flags_reach_the_worker() -> None:
    # one list of options: `orchard worker --help` is the worker's own parser
    done = _orchard("worker", "--help", timeout=60)
    assert done.returncode == 0
    for flag in ("--job-lease-s", "--trust-dir", "--no-advertise", "--port"):
        assert flag in done.stdout
    bad = _orchard("worker", "--job-lease-s", "0", timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_a_run_that_would_exhaust_the_machine_is_refused_before_any_worker(tmp_path: Path) -> None:
    """Issue 11's reproduction: batch 10000 on the demo took all 24 GB. Now: exit 2, the
    reason, the fix as --set flags, and nothing started (no run folder, no worker log)."""
    out = tmp_path / "runs"
    done = _orchard("demo", "--set", "run.batch_size=10000", "--out", str(out), "--no-sample")
    assert done.returncode == 2, done.stderr
    assert "This run cannot start:" in done.stderr
    assert "- memory: won't fit on this machine" in done.stderr
    assert "a micro-batch of 5000 sequences" in done.stderr
    assert "--set run.grad_accum=" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_dataset_errors_refuse_the_run_by_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "Hi", "output": "Hello"}) + "\n{not json\n")
    out = tmp_path / "runs"
    done = _orchard("train", "--data", str(bad), "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert f"- dataset: 1 error in {bad}" in done.stderr and f"{bad}:2" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
