"""dist.mode = "auto" end to end on two local workers: the coordinator probes them, plans,
runs a concrete mode (workers, job.toml and checkpoints see it), says why, and every step's
metrics carry the predicted step time and the scaling efficiency."""

from __future__ import annotations

import pytest

from engine.config import SYNC_MODES, JobSpec
from engine.events import LogEvent
from engine.runtime import start_run
from engine.train.checkpoint import load_latest_checkpoint
from engine.train.metrics import read_metrics
from tests.runtime.helpers import tiny_job


def test_auto_is_the_default_and_only_concrete_modes_are_sync_modes():
    assert JobSpec().dist.mode == "auto"
    assert "auto" not in SYNC_MODES
    with pytest.raises(ValueError, match="dist.mode: expected one of auto, all-reduce"):
        JobSpec().with_overrides(['dist.mode="fastest"'])


@pytest.mark.slow  # two local workers, 6 steps, probes included
def test_auto_resolves_before_setup_and_reports_measured_against_predicted(tmp_path):
    job = tiny_job(tmp_path, steps=6, **{"dist.mode": "auto", "dist.workers": 2,
                                         "run.checkpoint_every": 6})  # fmt: skip
    events: list = []
    result = start_run(job, events.append, data_dir=tmp_path / "cache").wait(300)
    assert result is not None and result.status == "finished", result
    chose = [
        e.message for e in events if isinstance(e, LogEvent) and "dist.mode auto ->" in e.message
    ]
    assert len(chose) == 1 and "predicted" in chose[0], chose
    from engine.events import StateEvent

    running = [e for e in events if isinstance(e, StateEvent) and e.state == "running"]
    plan = running[0].detail["plan"]
    assert plan["predicted_step_s"] > 0 and len(plan["shares"]) == 2 and plan["reason"]
    assert plan["local"] is True  # the app says so: processes of one machine, not two Macs
    saved = JobSpec.load(result.run_dir / "job.toml")
    assert saved.dist.mode in SYNC_MODES and saved.dist.mode != "mlx"  # local: no MLX ring
    assert saved.dist.mode in chose[0]
    ckpt = load_latest_checkpoint(result.run_dir)
    assert ckpt.meta["mode"] == saved.dist.mode
    assert plan["machines"] == 1 and plan["speedup"] < 1  # vs this machine in one process
    assert "measured from the" in plan["data"]  # the demo data's real widths
    rows = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert len(rows) == 6
    for r in rows:  # tokens/s counts trained tokens; the padded work is shown beside it
        assert r["tokens_per_s"] == pytest.approx(r["tokens"] / r["step_time_s"])
        assert r["work_tokens_per_s"] == pytest.approx(r["work_tokens"] / r["step_time_s"])
        assert r["work_tokens"] > r["tokens"] > 0
        assert r["predicted_step_s"] > 0
        assert 0 < r["scaling_efficiency"] <= 1  # never above the machine alone


@pytest.mark.slow  # two local workers started, probed and stopped
def test_orchard_plan_prints_the_table_for_local_workers(tmp_path, monkeypatch, capsys):
    from engine.cli.main import main

    monkeypatch.setenv("ORCHARD_HOME", str(tmp_path / "home"))
    assert main(["plan", "--workers", "2", "--set", "data.max_seq_len=64"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["mode", "compress", "accum", "step_s"]
    assert out.count("<- auto") == 1 and "mlx " not in out  # local workers: no MLX ring
    assert "127.0.0.1:" in out and "tokens/s the machine adds" in out
    assert "x this machine alone in one process" in out  # two processes, one machine
    assert "a share of this machine" in out and "trained tokens" in out
